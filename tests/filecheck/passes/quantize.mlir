// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8}" | filecheck %s --check-prefix=W8
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8a8}" | filecheck %s --check-prefix=W8A8
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w4g group=128 symmetric=false}" | filecheck %s --check-prefix=W4
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8a8g group=128}" | filecheck %s --check-prefix=W8A8G
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=fp8 skip=mlp.down|lm_head}" | filecheck %s --check-prefix=FP8
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8 method=gptq}" --calibration=synthetic:4 | filecheck %s --check-prefix=GPTQ8
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w4g group=128 method=gptq}" --calibration=synthetic:4 2>&1 | filecheck %s --check-prefix=GPTQ4
// RUN: not spokeshave-opt %s --pass-pipeline="quantize{scheme=w3}" 2>&1 | filecheck %s --check-prefix=BAD-SCHEME
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w4g group=100}" 2>&1 | filecheck %s --check-prefix=BAD-GROUP
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w4g method=gptq}" 2>&1 | filecheck %s --check-prefix=NO-CALIB

// BAD-SCHEME: error: pass 'quantize': option 'scheme' must be one of w8, w8a8, w8a8g, w4g, fp8; got 'w3'
// BAD-GROUP: error: pass 'quantize': option 'group' must be one of 16, 32, 64, 128, 256, 512, 1024; got 100
// NO-CALIB: error: pass 'quantize{method=gptq}' needs calibration data: pass calibration=[batches] to spokeshave.compile

// `method=gptq` needs calibration (`--calibration=synthetic:4` here: seeded random batches);
// it changes which integers are stored, not the IR's shape: the GPTQ8/GPTQ4 checks are the
// round-to-nearest ones.

// A two-layer MLP. Every linear with a parameter weight becomes a quantized linear reading
// new parameters `<layer>.qweight` / `<layer>.scale` (`.zeros` for asymmetric int4); the
// float weights go away, the bias stays the trailing operand.

// W8-LABEL: func.func @mlp(
// W8-NEXT:     %x: tensor<4x256xf32>,
// W8-NEXT:     %[[B0:[^:]+]]: tensor<64xf32> {spk.param = "mlp.up.bias"},
// W8-NEXT:     %[[Q0:[^:]+]]: tensor<64x256xi8> {spk.param = "mlp.up.qweight"},
// W8-NEXT:     %[[S0:[^:]+]]: tensor<64xf32> {spk.param = "mlp.up.scale"},
// W8-NEXT:     %[[Q1:[^:]+]]: tensor<32x64xi8> {spk.param = "mlp.down.qweight"},
// W8-NEXT:     %[[S1:[^:]+]]: tensor<32xf32> {spk.param = "mlp.down.scale"}) -> tensor<4x32xf32> {
// W8-NEXT:     %[[H:.+]] = "spk.linear_w8"(%x, %[[Q0]], %[[S0]], %[[B0]]) : (tensor<4x256xf32>, tensor<64x256xi8>, tensor<64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// W8-NEXT:     %[[R:.+]] = "aten.relu"(%[[H]])
// W8-NEXT:     %[[Y:.+]] = "spk.linear_w8"(%[[R]], %[[Q1]], %[[S1]]) : (tensor<4x64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<4x32xf32>
// W8-NEXT:     return %[[Y]]

// W8A8-LABEL: func.func @mlp
// W8A8-NOT:     "aten.linear"
// W8A8:         %[[H:.+]] = "spk.linear_w8a8"(%x, %{{.+}}, %{{.+}}, %b0) : (tensor<4x256xf32>, tensor<64x256xi8>, tensor<64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// W8A8:         "spk.linear_w8a8"(%{{.+}}, %{{.+}}, %{{.+}}) : (tensor<4x64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<4x32xf32>

// w8a8g: w8a8's weights, activation groups of 128 as the op's attribute; 128 does not
// divide the second layer's 64 in-features, so it stays float.
// W8A8G-LABEL: func.func @mlp
// W8A8G:         "spk.linear_w8a8g"(%x, %{{.+}}, %{{.+}}, %b0) {group = 128} : (tensor<4x256xf32>, tensor<64x256xi8>, tensor<64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// W8A8G:         "aten.linear"(%{{.+}}, %{{.+}}) : (tensor<4x64xf32>, tensor<32x64xf32>) -> tensor<4x32xf32>

// Group 128 divides 256 but not 64: the first layer is packed two int4 per byte
// ([64, 256] -> [64, 128] ui8) with [64, 2] scales and zero points; the second stays float.
// W4-LABEL: func.func @mlp(
// W4-NEXT:     %x: tensor<4x256xf32>,
// W4-NEXT:     %b0: tensor<64xf32> {spk.param = "mlp.up.bias"},
// W4-NEXT:     %[[W1:[^:]+]]: tensor<32x64xf32> {spk.param = "mlp.down.weight"},
// W4-NEXT:     %[[Q0:[^:]+]]: tensor<64x128xui8> {spk.param = "mlp.up.qweight"},
// W4-NEXT:     %[[S0:[^:]+]]: tensor<64x2xf32> {spk.param = "mlp.up.scale"},
// W4-NEXT:     %[[Z0:[^:]+]]: tensor<64x2xui8> {spk.param = "mlp.up.zeros"}) -> tensor<4x32xf32> {
// W4-NEXT:     "spk.linear_w4g"(%x, %[[Q0]], %[[S0]], %[[Z0]], %b0) {group = 128, symmetric = false}
// W4:          "aten.linear"(%{{.+}}, %[[W1]])

// GPTQ writes the same parameters and ops as round-to-nearest.
// GPTQ8-LABEL: func.func @mlp(
// GPTQ8-NEXT:     %x: tensor<4x256xf32>,
// GPTQ8-NEXT:     %[[B0:[^:]+]]: tensor<64xf32> {spk.param = "mlp.up.bias"},
// GPTQ8-NEXT:     %[[Q0:[^:]+]]: tensor<64x256xi8> {spk.param = "mlp.up.qweight"},
// GPTQ8-NEXT:     %[[S0:[^:]+]]: tensor<64xf32> {spk.param = "mlp.up.scale"},
// GPTQ8-NEXT:     %[[Q1:[^:]+]]: tensor<32x64xi8> {spk.param = "mlp.down.qweight"},
// GPTQ8-NEXT:     %[[S1:[^:]+]]: tensor<32xf32> {spk.param = "mlp.down.scale"}) -> tensor<4x32xf32> {
// GPTQ8-NEXT:     %[[H:.+]] = "spk.linear_w8"(%x, %[[Q0]], %[[S0]], %[[B0]]) : (tensor<4x256xf32>, tensor<64x256xi8>, tensor<64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// GPTQ8-NEXT:     %[[R:.+]] = "aten.relu"(%[[H]])
// GPTQ8-NEXT:     %[[Y:.+]] = "spk.linear_w8"(%[[R]], %[[Q1]], %[[S1]]) : (tensor<4x64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<4x32xf32>
// GPTQ8-NEXT:     return %[[Y]]

// Symmetric int4 (the default): no zero points. mlp.down (64 in-features) does not fit
// group 128 and stays float, with a remark.
// GPTQ4: remark: quantize: skipped layer 'mlp.down': in-features 64 not divisible by group 128
// GPTQ4-LABEL: func.func @mlp(
// GPTQ4-NEXT:     %x: tensor<4x256xf32>,
// GPTQ4-NEXT:     %[[B0:[^:]+]]: tensor<64xf32> {spk.param = "mlp.up.bias"},
// GPTQ4-NEXT:     %[[W1:[^:]+]]: tensor<32x64xf32> {spk.param = "mlp.down.weight"},
// GPTQ4-NEXT:     %[[Q0:[^:]+]]: tensor<64x128xui8> {spk.param = "mlp.up.qweight"},
// GPTQ4-NEXT:     %[[S0:[^:]+]]: tensor<64x2xf32> {spk.param = "mlp.up.scale"}) -> tensor<4x32xf32> {
// GPTQ4-NEXT:     %[[H:.+]] = "spk.linear_w4g"(%x, %[[Q0]], %[[S0]], %[[B0]]) {group = 128, symmetric = true} : (tensor<4x256xf32>, tensor<64x128xui8>, tensor<64x2xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// GPTQ4-NEXT:     %[[R:.+]] = "aten.relu"(%[[H]])
// GPTQ4-NEXT:     %[[Y:.+]] = "aten.linear"(%[[R]], %[[W1]]) : (tensor<4x64xf32>, tensor<32x64xf32>) -> tensor<4x32xf32>
// GPTQ4-NEXT:     return %[[Y]]

// FP8-LABEL: func.func @mlp(
// FP8:         %[[W1:[^:]+]]: tensor<32x64xf32> {spk.param = "mlp.down.weight"},
// FP8-NEXT:    %[[Q0:[^:]+]]: tensor<64x256xf8E4M3FN> {spk.param = "mlp.up.qweight"},
// FP8:         "spk.linear_fp8"(%x, %[[Q0]], %{{.+}}, %b0) : (tensor<4x256xf32>, tensor<64x256xf8E4M3FN>, tensor<64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// FP8:         "aten.linear"(%{{.+}}, %[[W1]])
func.func @mlp(%x: tensor<4x256xf32>, %w0: tensor<64x256xf32> {spk.param = "mlp.up.weight"}, %b0: tensor<64xf32> {spk.param = "mlp.up.bias"}, %w1: tensor<32x64xf32> {spk.param = "mlp.down.weight"}) -> tensor<4x32xf32> {
  %0 = "aten.linear"(%x, %w0, %b0) : (tensor<4x256xf32>, tensor<64x256xf32>, tensor<64xf32>) -> tensor<4x64xf32>
  %1 = "aten.relu"(%0) : (tensor<4x64xf32>) -> tensor<4x64xf32>
  %2 = "aten.linear"(%1, %w1) : (tensor<4x64xf32>, tensor<32x64xf32>) -> tensor<4x32xf32>
  return %2 : tensor<4x32xf32>
}

// -----

// Tied embedding: the weight also feeds aten.embedding, so the float parameter stays for it
// while the linear reads the quantized copy. Dynamic batch dims are kept.

// W8-LABEL: func.func @tied(
// W8-NEXT:     %ids: tensor<?x8xi64>,
// W8-NEXT:     %[[E:[^:]+]]: tensor<128x256xf32> {spk.param = "lm_head.weight"},
// W8-NEXT:     %[[Q:[^:]+]]: tensor<128x256xi8> {spk.param = "lm_head.qweight"},
// W8-NEXT:     %[[S:[^:]+]]: tensor<128xf32> {spk.param = "lm_head.scale"}) -> tensor<?x8x128xf32> {
// W8-NEXT:     %[[H:.+]] = "aten.embedding"(%[[E]], %ids)
// W8-NEXT:     "spk.linear_w8"(%[[H]], %[[Q]], %[[S]]) : (tensor<?x8x256xf32>, tensor<128x256xi8>, tensor<128xf32>) -> tensor<?x8x128xf32>

// W4-LABEL: func.func @tied
// W4:          "spk.linear_w4g"(%{{.+}}) {group = 128, symmetric = false} : (tensor<?x8x256xf32>, tensor<128x128xui8>, tensor<128x2xf32>, tensor<128x2xui8>) -> tensor<?x8x128xf32>

// GPTQ8-LABEL: func.func @tied(
// GPTQ8-NEXT:     %ids: tensor<?x8xi64>,
// GPTQ8-NEXT:     %[[E:[^:]+]]: tensor<128x256xf32> {spk.param = "lm_head.weight"},
// GPTQ8-NEXT:     %[[Q:[^:]+]]: tensor<128x256xi8> {spk.param = "lm_head.qweight"},
// GPTQ8-NEXT:     %[[S:[^:]+]]: tensor<128xf32> {spk.param = "lm_head.scale"}) -> tensor<?x8x128xf32> {
// GPTQ8-NEXT:     %[[H:.+]] = "aten.embedding"(%[[E]], %ids)
// GPTQ8-NEXT:     "spk.linear_w8"(%[[H]], %[[Q]], %[[S]]) : (tensor<?x8x256xf32>, tensor<128x256xi8>, tensor<128xf32>) -> tensor<?x8x128xf32>

// GPTQ4-LABEL: func.func @tied(
// GPTQ4:          %[[H:.+]] = "aten.embedding"
// GPTQ4-NEXT:     "spk.linear_w4g"(%[[H]], %{{.+}}, %{{.+}}) {group = 128, symmetric = true} : (tensor<?x8x256xf32>, tensor<128x128xui8>, tensor<128x2xf32>) -> tensor<?x8x128xf32>

// FP8-LABEL: func.func @tied
// FP8-NOT:     spk.linear_fp8
// FP8:         "aten.linear"
func.func @tied(%ids: tensor<?x8xi64>, %emb: tensor<128x256xf32> {spk.param = "lm_head.weight"}) -> tensor<?x8x128xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<128x256xf32>, tensor<?x8xi64>) -> tensor<?x8x256xf32>
  %1 = "aten.linear"(%0, %emb) : (tensor<?x8x256xf32>, tensor<128x256xf32>) -> tensor<?x8x128xf32>
  return %1 : tensor<?x8x128xf32>
}

// -----

// A linear whose weight is computed (not a parameter) is left alone by every scheme.

// W8-LABEL: func.func @computed_weight
// W8:          "aten.linear"(%x, %[[T:.+]]) :
// W8-NOT:      spk.linear_w8

// W8A8-LABEL: func.func @computed_weight
// W8A8-NOT:     spk.linear_w8a8

// GPTQ8-LABEL: func.func @computed_weight
// GPTQ8-NOT:     spk.linear_w8
// GPTQ8:         "aten.linear"(%x, %{{.+}}) :

// GPTQ4-LABEL: func.func @computed_weight
// GPTQ4-NOT:     spk.linear_w4g
// GPTQ4:         "aten.linear"(%x, %{{.+}}) :
func.func @computed_weight(%x: tensor<4x16xf32>, %w: tensor<16x8xf32> {spk.param = "w"}) -> tensor<4x8xf32> {
  %0 = "aten.t"(%w) : (tensor<16x8xf32>) -> tensor<8x16xf32>
  %1 = "aten.linear"(%x, %0) : (tensor<4x16xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
  return %1 : tensor<4x8xf32>
}
