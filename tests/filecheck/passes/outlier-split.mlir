// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split" 2>&1 >/dev/null | filecheck %s --check-prefix=ERR
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split{threshold=4.0}" 2>/dev/null | filecheck %s
// RUN: not spokeshave-opt %s --pass-pipeline="outlier-split{threshold=0}" 2>&1 | filecheck %s --check-prefix=BAD-THRESHOLD
// RUN: not spokeshave-opt %s --pass-pipeline="outlier-split{threshold=big}" 2>&1 | filecheck %s --check-prefix=BAD-TYPE
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split" --calibration=synthetic:4 2>/dev/null | filecheck %s --check-prefix=CAL
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split{threshold=1000}" --calibration=synthetic:4 2>/dev/null | filecheck %s --check-prefix=HIGH
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split{threshold=0.01}" --calibration=synthetic:4 --verify-diagnostics >/dev/null
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split{layers=mlp.* skip=mlp.down}" --calibration=synthetic:4 2>/dev/null | filecheck %s --check-prefix=SEL
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split{scheme=w8}" --calibration=synthetic:4 2>/dev/null | filecheck %s --check-prefix=W8
// RUN: not spokeshave-opt %s --pass-pipeline="outlier-split{scheme=w4}" 2>&1 | filecheck %s --check-prefix=BAD-SCHEME

// BAD-THRESHOLD: error: pass 'outlier-split': option 'threshold' must be > 0; got 0.0
// BAD-TYPE: error: pass 'outlier-split': option 'threshold' expects float, got 'big'
// BAD-SCHEME: error: pass 'outlier-split': option 'scheme' must be one of w8a8, w8; got 'w4'

// scheme=w8 is the weight-only variant: the same operands in `spk.linear_w8_split`, and
// `spk.linear_w8` where no input channel is an outlier (checked on @linear and @mlp below).
// W8-LABEL: func.func @linear(
// W8:          %[[OW:[^:]+]]: tensor<16x[[M:[0-9]+]]xf32> {spk.param = "fc.oweight"},
// W8-NEXT:     %[[OI:[^:]+]]: tensor<[[M]]xi64> {spk.param = "fc.oindex"}) -> tensor<2x4x16xf32> {
// W8-NEXT:     %[[Y:.+]] = "spk.linear_w8_split"(%x, %{{.+}}, %{{.+}}, %[[OW]], %[[OI]], %{{.+}}) : (tensor<2x4x8xf32>, tensor<16x8xi8>, tensor<16xf32>, tensor<16x[[M]]xf32>, tensor<[[M]]xi64>, tensor<16xf32>) -> tensor<2x4x16xf32>
// W8-NEXT:     return %[[Y]]
// W8-LABEL: func.func @mlp(
// W8:          %[[U:.+]] = "spk.linear_w8_split"(%x,
// W8-NEXT:     %[[N:.+]] = "aten.layer_norm"(%[[U]]
// W8-NEXT:     %[[D:.+]] = "spk.linear_w8"(%[[N]], %{{.+}}, %{{.+}}) : (tensor<4x32xf32>, tensor<16x32xi8>, tensor<16xf32>) -> tensor<4x16xf32>
// W8-NEXT:     return %[[D]]
// W8-NOT:      w8a8

// Which input channels are outliers comes from calibration activations: without
// `--calibration`, with a linear to split, the pass refuses and names itself. With
// `--calibration=synthetic:4` (seeded batches whose channels have heavy-tailed scales, so
// some exceed the threshold) the rewrite is checked here structurally; how many channels
// are outliers depends on the data, so their count is matched, not written down. The
// numerics (outlier columns in float, the rest int8) are tested from Python
// (tests/test_outliers.py). The op the pass produces, `spk.linear_w8a8_split`, is also
// checked to parse, verify and print back, and to be refused when malformed. Every
// `RUN` with calibration still exits 1: the malformed case fails to verify.

// ERR: error: pass 'outlier-split' needs calibration data: pass calibration=[batches] to spokeshave.compile

// A linear reading raw inputs: some channels exceed 6.0, their M columns of W stay float in
// `fc.oweight` [16, M] (with their indices `fc.oindex` [M]); the rest is int8. The float
// weight goes; the bias stays the trailing operand.
// CAL-LABEL: func.func @linear(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[B:[^:]+]]: tensor<16xf32> {spk.param = "fc.bias"},
// CAL-NEXT:    %[[Q:[^:]+]]: tensor<16x8xi8> {spk.param = "fc.qweight"},
// CAL-NEXT:    %[[S:[^:]+]]: tensor<16xf32> {spk.param = "fc.scale"},
// CAL-NEXT:    %[[OW:[^:]+]]: tensor<16x[[M:[0-9]+]]xf32> {spk.param = "fc.oweight"},
// CAL-NEXT:    %[[OI:[^:]+]]: tensor<[[M]]xi64> {spk.param = "fc.oindex"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[Y:.+]] = "spk.linear_w8a8_split"(%x, %[[Q]], %[[S]], %[[OW]], %[[OI]], %[[B]]) : (tensor<2x4x8xf32>, tensor<16x8xi8>, tensor<16xf32>, tensor<16x[[M]]xf32>, tensor<[[M]]xi64>, tensor<16xf32>) -> tensor<2x4x16xf32>
// CAL-NEXT:    return %[[Y]]
// CAL-NOT:     "aten.linear"

// A threshold no channel reaches: plain `spk.linear_w8a8`, as `quantize{scheme=w8a8}` writes.
// HIGH-LABEL: func.func @linear(
// HIGH-NEXT:    %x: tensor<2x4x8xf32>,
// HIGH-NEXT:    %[[B:[^:]+]]: tensor<16xf32> {spk.param = "fc.bias"},
// HIGH-NEXT:    %[[Q:[^:]+]]: tensor<16x8xi8> {spk.param = "fc.qweight"},
// HIGH-NEXT:    %[[S:[^:]+]]: tensor<16xf32> {spk.param = "fc.scale"}) -> tensor<2x4x16xf32> {
// HIGH-NEXT:    %[[Y:.+]] = "spk.linear_w8a8"(%x, %[[Q]], %[[S]], %[[B]]) : (tensor<2x4x8xf32>, tensor<16x8xi8>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x4x16xf32>
// HIGH-NEXT:    return %[[Y]]

// A threshold every channel exceeds (0.01, the --verify-diagnostics run): nothing would be
// int8, so the layer stays float and a remark at the linear says so.

// Not selected by SEL (layers=mlp.*): unchanged.
// SEL-LABEL: func.func @linear(
// SEL-NOT:     spk.linear
// SEL:         "aten.linear"(%x, %w, %b)
func.func @linear(%x: tensor<2x4x8xf32>, %w: tensor<16x8xf32> {spk.param = "fc.weight"},
                  %b: tensor<16xf32> {spk.param = "fc.bias"}) -> tensor<2x4x16xf32> {
  // expected-remark@+1 {{outlier-split: skipped layer 'fc': all 8 input channels exceed the threshold 0.01: kept in float}}
  %0 = "aten.linear"(%x, %w, %b) : (tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<2x4x16xf32>
  return %0 : tensor<2x4x16xf32>
}

// -----

// An already split linear (what the pass writes, with bias): nothing left to split, so no
// calibration is needed; the op verifies and prints back unchanged.
// CHECK-NOT:     func.func @linear
// CHECK-LABEL: func.func @split(
// CHECK-NEXT:    %x: tensor<2x4x8xf32>,
// CHECK-NEXT:    %[[Q:[^:]+]]: tensor<16x8xi8> {spk.param = "fc.qweight"}
// CHECK-NEXT:    %[[S:[^:]+]]: tensor<16xf32> {spk.param = "fc.scale"}
// CHECK-NEXT:    %[[OW:[^:]+]]: tensor<16x2xf32> {spk.param = "fc.oweight"}
// CHECK-NEXT:    %[[OI:[^:]+]]: tensor<2xi64> {spk.param = "fc.oindex"}
// CHECK-NEXT:    %[[B:[^:]+]]: tensor<16xf32> {spk.param = "fc.bias"}
// CHECK:         %[[Y:.*]] = "spk.linear_w8a8_split"(%x, %[[Q]], %[[S]], %[[OW]], %[[OI]], %[[B]]) : (tensor<2x4x8xf32>, tensor<16x8xi8>, tensor<16xf32>, tensor<16x2xf32>, tensor<2xi64>, tensor<16xf32>) -> tensor<2x4x16xf32>
// CHECK-NEXT:    return %[[Y]]

// With calibration: the same, nothing to split.
// CAL-LABEL: func.func @split(
// CAL:         %[[Y:.*]] = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi, %b) :
// CAL-NEXT:    return %[[Y]]
func.func @split(%x: tensor<2x4x8xf32>, %q: tensor<16x8xi8> {spk.param = "fc.qweight"},
                 %s: tensor<16xf32> {spk.param = "fc.scale"},
                 %ow: tensor<16x2xf32> {spk.param = "fc.oweight"},
                 %oi: tensor<2xi64> {spk.param = "fc.oindex"},
                 %b: tensor<16xf32> {spk.param = "fc.bias"}) -> tensor<2x4x16xf32> {
  %0 = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi, %b) : (tensor<2x4x8xf32>, tensor<16x8xi8>, tensor<16xf32>, tensor<16x2xf32>, tensor<2xi64>, tensor<16xf32>) -> tensor<2x4x16xf32>
  return %0 : tensor<2x4x16xf32>
}

// -----

// A malformed split: the outlier weight has 3 columns but there are 2 outlier indices.
// ERR: error: {{.*}}oweight must be a float tensor [16, 2] (out, outlier columns), got tensor<16x3xf32>
func.func @bad_split(%x: tensor<2x4x8xf32>, %q: tensor<16x8xi8> {spk.param = "fc.qweight"},
                     %s: tensor<16xf32> {spk.param = "fc.scale"},
                     %ow: tensor<16x3xf32> {spk.param = "fc.oweight"},
                     %oi: tensor<2xi64> {spk.param = "fc.oindex"}) -> tensor<2x4x16xf32> {
  // expected-error@+1 {{op "spk.linear_w8a8_split": oweight must be a float tensor [16, 2] (out, outlier columns), got tensor<16x3xf32>}}
  %0 = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi) : (tensor<2x4x8xf32>, tensor<16x8xi8>, tensor<16xf32>, tensor<16x3xf32>, tensor<2xi64>) -> tensor<2x4x16xf32>
  return %0 : tensor<2x4x16xf32>
}

// -----

// A two-layer block: `mlp.up` reads raw inputs with outlier channels and is split; `mlp.down`
// reads a LayerNorm output, where no channel reaches 6.0, and becomes a plain
// `spk.linear_w8a8` (no oweight/oindex).
// CAL-LABEL: func.func @mlp(
// CAL-NEXT:    %x: tensor<4x64xf32>,
// CAL-NEXT:    %[[BU:[^:]+]]: tensor<32xf32> {spk.param = "mlp.up.bias"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<32xf32> {spk.param = "mlp.ln.weight"},
// CAL-NEXT:    %[[QU:[^:]+]]: tensor<32x64xi8> {spk.param = "mlp.up.qweight"},
// CAL-NEXT:    %[[SU:[^:]+]]: tensor<32xf32> {spk.param = "mlp.up.scale"},
// CAL-NEXT:    %[[OW:[^:]+]]: tensor<32x[[M:[0-9]+]]xf32> {spk.param = "mlp.up.oweight"},
// CAL-NEXT:    %[[OI:[^:]+]]: tensor<[[M]]xi64> {spk.param = "mlp.up.oindex"},
// CAL-NEXT:    %[[QD:[^:]+]]: tensor<16x32xi8> {spk.param = "mlp.down.qweight"},
// CAL-NEXT:    %[[SD:[^:]+]]: tensor<16xf32> {spk.param = "mlp.down.scale"}) -> tensor<4x16xf32> {
// CAL-NEXT:    %[[U:.+]] = "spk.linear_w8a8_split"(%x, %[[QU]], %[[SU]], %[[OW]], %[[OI]], %[[BU]]) : (tensor<4x64xf32>, tensor<32x64xi8>, tensor<32xf32>, tensor<32x[[M]]xf32>, tensor<[[M]]xi64>, tensor<32xf32>) -> tensor<4x32xf32>
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[U]], %[[G]]) {normalized_shape = [32]}
// CAL-NEXT:    %[[D:.+]] = "spk.linear_w8a8"(%[[N]], %[[QD]], %[[SD]]) : (tensor<4x32xf32>, tensor<16x32xi8>, tensor<16xf32>) -> tensor<4x16xf32>
// CAL-NEXT:    return %[[D]]

// HIGH-LABEL: func.func @mlp(
// HIGH-NOT:     oweight
// HIGH-NOT:     oindex
// HIGH:         %[[U:.+]] = "spk.linear_w8a8"(%x, %{{.+}}, %{{.+}}, %{{.+}}) : (tensor<4x64xf32>, tensor<32x64xi8>, tensor<32xf32>, tensor<32xf32>) -> tensor<4x32xf32>
// HIGH-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[U]]
// HIGH-NEXT:    "spk.linear_w8a8"(%[[N]], %{{.+}}, %{{.+}}) : (tensor<4x32xf32>, tensor<16x32xi8>, tensor<16xf32>) -> tensor<4x16xf32>

// Nearly every LayerNorm channel exceeds 0.01, the raw inputs all do (the remark on mlp.up).

// Selection: `mlp.up` is split, `skip=mlp.down` stays a float linear.
// SEL-LABEL: func.func @mlp(
// SEL:         %[[W:[^:]+]]: tensor<16x32xf32> {spk.param = "mlp.down.weight"},
// SEL:         %[[U:.+]] = "spk.linear_w8a8_split"(%x,
// SEL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[U]]
// SEL-NEXT:    "aten.linear"(%[[N]], %[[W]]) : (tensor<4x32xf32>, tensor<16x32xf32>) -> tensor<4x16xf32>
func.func @mlp(%x: tensor<4x64xf32>,
               %wu: tensor<32x64xf32> {spk.param = "mlp.up.weight"},
               %bu: tensor<32xf32> {spk.param = "mlp.up.bias"},
               %g: tensor<32xf32> {spk.param = "mlp.ln.weight"},
               %wd: tensor<16x32xf32> {spk.param = "mlp.down.weight"}) -> tensor<4x16xf32> {
  // expected-remark@+1 {{outlier-split: skipped layer 'mlp.up': all 64 input channels exceed the threshold 0.01}}
  %0 = "aten.linear"(%x, %wu, %bu) : (tensor<4x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<4x32xf32>
  %1 = "aten.layer_norm"(%0, %g) {normalized_shape = [32]} : (tensor<4x32xf32>, tensor<32xf32>) -> tensor<4x32xf32>
  %2 = "aten.linear"(%1, %wd) : (tensor<4x32xf32>, tensor<16x32xf32>) -> tensor<4x16xf32>
  return %2 : tensor<4x16xf32>
}

// -----

// One weight read by two linears with different inputs: each use has its own outlier
// channels, so each gets its own split parameters (the second set suffixed `.1`).
// CAL-LABEL: func.func @shared(
// CAL-NEXT:    %x: tensor<2x32xf32>,
// CAL-NEXT:    %y: tensor<3x32xf32>,
// CAL-NEXT:    %[[Q0:[^:]+]]: tensor<8x32xi8> {spk.param = "proj.qweight"},
// CAL-NEXT:    %[[S0:[^:]+]]: tensor<8xf32> {spk.param = "proj.scale"},
// CAL-NEXT:    %[[OW0:[^:]+]]: tensor<8x[[M0:[0-9]+]]xf32> {spk.param = "proj.oweight"},
// CAL-NEXT:    %[[OI0:[^:]+]]: tensor<[[M0]]xi64> {spk.param = "proj.oindex"},
// CAL-NEXT:    %[[Q1:[^:]+]]: tensor<8x32xi8> {spk.param = "proj.qweight.1"},
// CAL-NEXT:    %[[S1:[^:]+]]: tensor<8xf32> {spk.param = "proj.scale.1"},
// CAL-NEXT:    %[[OW1:[^:]+]]: tensor<8x[[M1:[0-9]+]]xf32> {spk.param = "proj.oweight.1"},
// CAL-NEXT:    %[[OI1:[^:]+]]: tensor<[[M1]]xi64> {spk.param = "proj.oindex.1"}) -> (tensor<2x8xf32>, tensor<3x8xf32>) {
// CAL-NEXT:    %[[A:.+]] = "spk.linear_w8a8_split"(%x, %[[Q0]], %[[S0]], %[[OW0]], %[[OI0]]) : (tensor<2x32xf32>, tensor<8x32xi8>, tensor<8xf32>, tensor<8x[[M0]]xf32>, tensor<[[M0]]xi64>) -> tensor<2x8xf32>
// CAL-NEXT:    %[[B:.+]] = "spk.linear_w8a8_split"(%y, %[[Q1]], %[[S1]], %[[OW1]], %[[OI1]]) : (tensor<3x32xf32>, tensor<8x32xi8>, tensor<8xf32>, tensor<8x[[M1]]xf32>, tensor<[[M1]]xi64>) -> tensor<3x8xf32>
// CAL-NEXT:    return %[[A]], %[[B]]
func.func @shared(%x: tensor<2x32xf32>, %y: tensor<3x32xf32>,
                  %w: tensor<8x32xf32> {spk.param = "proj.weight"}) -> (tensor<2x8xf32>, tensor<3x8xf32>) {
  // expected-remark@+2 {{skipped layer 'proj': all 32 input channels exceed the threshold 0.01}}
  // expected-remark@+2 {{skipped layer 'proj': all 32 input channels exceed the threshold 0.01}}
  %0 = "aten.linear"(%x, %w) : (tensor<2x32xf32>, tensor<8x32xf32>) -> tensor<2x8xf32>
  %1 = "aten.linear"(%y, %w) : (tensor<3x32xf32>, tensor<8x32xf32>) -> tensor<3x8xf32>
  return %0, %1 : tensor<2x8xf32>, tensor<3x8xf32>
}

// -----

// An LM head tied to the embedding: the embedding keeps the float table; the head, whose
// input (small embedding rows) has no outlier channel, becomes `spk.linear_w8a8`. Dynamic
// batch dims are kept (synthetic batches use 4 for them).
// CAL-LABEL: func.func @tied(
// CAL-NEXT:    %ids: tensor<?x8xi64>,
// CAL-NEXT:    %[[E:[^:]+]]: tensor<128x256xf32> {spk.param = "lm_head.weight"},
// CAL-NEXT:    %[[Q:[^:]+]]: tensor<128x256xi8> {spk.param = "lm_head.qweight"},
// CAL-NEXT:    %[[S:[^:]+]]: tensor<128xf32> {spk.param = "lm_head.scale"}) -> tensor<?x8x128xf32> {
// CAL-NEXT:    %[[H:.+]] = "aten.embedding"(%[[E]], %ids)
// CAL-NEXT:    %[[Y:.+]] = "spk.linear_w8a8"(%[[H]], %[[Q]], %[[S]]) : (tensor<?x8x256xf32>, tensor<128x256xi8>, tensor<128xf32>) -> tensor<?x8x128xf32>
// CAL-NEXT:    return %[[Y]]
func.func @tied(%ids: tensor<?x8xi64>, %emb: tensor<128x256xf32> {spk.param = "lm_head.weight"}) -> tensor<?x8x128xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<128x256xf32>, tensor<?x8xi64>) -> tensor<?x8x256xf32>
  // expected-remark@+1 {{skipped layer 'lm_head': all 256 input channels exceed the threshold 0.01}}
  %1 = "aten.linear"(%0, %emb) : (tensor<?x8x256xf32>, tensor<128x256xf32>) -> tensor<?x8x128xf32>
  return %1 : tensor<?x8x128xf32>
}
