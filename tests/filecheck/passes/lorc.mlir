// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8},lorc{rank=4}" | filecheck %s
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w4g group=16 symmetric=false},lorc{rank=2 skip=mlp.down}" 2>&1 | filecheck %s --check-prefix=W4
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="sparsify{pattern=2:4},lorc{rank=2}" | filecheck %s --check-prefix=SPARSE
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8},lorc{rank=16}" 2>&1 | filecheck %s --check-prefix=BIG
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="lorc{rank=4}" | filecheck %s --check-prefix=FLOAT
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8},lorc{rank=2 whiten=true}" --calibration=synthetic:4 | filecheck %s --check-prefix=WHITEN
// RUN: not spokeshave-opt %s --pass-pipeline="lorc{rank=0}" 2>&1 | filecheck %s --check-prefix=BAD-RANK
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="quantize{scheme=w8},lorc{whiten=true}" 2>&1 | filecheck %s --check-prefix=NO-CALIB

// BAD-RANK: error: pass 'lorc': option 'rank' must be a positive integer; got 0
// NO-CALIB: error: pass 'lorc{whiten=true}' needs calibration data

// Each compressed linear gets its error back as two thin linears (x -> rank, rank -> out)
// added to its result; every former user of the result reads the sum. The factors are new
// parameters `<layer>.lorc_b` [r, K] and `<layer>.lorc_a` [N, r] in the layer's float dtype.

// CHECK-LABEL: func.func @mlp(
// CHECK:         %[[A0:[^:]+]]: tensor<64x4xf32> {spk.param = "mlp.up.lorc_a"},
// CHECK-NEXT:    %[[B0:[^:]+]]: tensor<4x32xf32> {spk.param = "mlp.up.lorc_b"},
// CHECK-NEXT:    %[[A1:[^:]+]]: tensor<16x4xf32> {spk.param = "mlp.down.lorc_a"},
// CHECK-NEXT:    %[[B1:[^:]+]]: tensor<4x64xf32> {spk.param = "mlp.down.lorc_b"}) -> tensor<4x16xf32> {
// CHECK-NEXT:    %[[Q:.+]] = "spk.linear_w8"(%x, %{{.+}}, %{{.+}}, %{{.+}}) : {{.*}} -> tensor<4x64xf32>
// CHECK-NEXT:    %[[T:.+]] = "aten.linear"(%x, %[[B0]]) : (tensor<4x32xf32>, tensor<4x32xf32>) -> tensor<4x4xf32>
// CHECK-NEXT:    %[[C:.+]] = "aten.linear"(%[[T]], %[[A0]]) : (tensor<4x4xf32>, tensor<64x4xf32>) -> tensor<4x64xf32>
// CHECK-NEXT:    %[[H:.+]] = "aten.add.Tensor"(%[[Q]], %[[C]])
// CHECK-NEXT:    %[[R:.+]] = "aten.relu"(%[[H]])
// CHECK-NEXT:    %[[Q1:.+]] = "spk.linear_w8"(%[[R]], %{{.+}}, %{{.+}})
// CHECK-NEXT:    %[[T1:.+]] = "aten.linear"(%[[R]], %[[B1]])
// CHECK-NEXT:    %[[C1:.+]] = "aten.linear"(%[[T1]], %[[A1]])
// CHECK-NEXT:    %[[Y:.+]] = "aten.add.Tensor"(%[[Q1]], %[[C1]])
// CHECK-NEXT:    return %[[Y]]

// whiten=true fits the factors to the calibration activations (`--calibration=synthetic:4`:
// seeded random batches): other numbers, the same rewrite.
// WHITEN-LABEL: func.func @mlp(
// WHITEN:         %[[A0:[^:]+]]: tensor<64x2xf32> {spk.param = "mlp.up.lorc_a"},
// WHITEN-NEXT:    %[[B0:[^:]+]]: tensor<2x32xf32> {spk.param = "mlp.up.lorc_b"},
// WHITEN-NEXT:    %[[A1:[^:]+]]: tensor<16x2xf32> {spk.param = "mlp.down.lorc_a"},
// WHITEN-NEXT:    %[[B1:[^:]+]]: tensor<2x64xf32> {spk.param = "mlp.down.lorc_b"}) -> tensor<4x16xf32> {
// WHITEN-NEXT:    %[[Q:.+]] = "spk.linear_w8"(%x, %{{.+}}, %{{.+}}, %{{.+}}) : {{.*}} -> tensor<4x64xf32>
// WHITEN-NEXT:    %[[T:.+]] = "aten.linear"(%x, %[[B0]]) : (tensor<4x32xf32>, tensor<2x32xf32>) -> tensor<4x2xf32>
// WHITEN-NEXT:    %[[C:.+]] = "aten.linear"(%[[T]], %[[A0]]) : (tensor<4x2xf32>, tensor<64x2xf32>) -> tensor<4x64xf32>
// WHITEN-NEXT:    %[[H:.+]] = "aten.add.Tensor"(%[[Q]], %[[C]])
// WHITEN-NEXT:    %[[R:.+]] = "aten.relu"(%[[H]])
// WHITEN-NEXT:    %[[Q1:.+]] = "spk.linear_w8"(%[[R]], %{{.+}}, %{{.+}})
// WHITEN-NEXT:    %[[T1:.+]] = "aten.linear"(%[[R]], %[[B1]]) : (tensor<4x64xf32>, tensor<2x64xf32>) -> tensor<4x2xf32>
// WHITEN-NEXT:    %[[C1:.+]] = "aten.linear"(%[[T1]], %[[A1]]) : (tensor<4x2xf32>, tensor<16x2xf32>) -> tensor<4x16xf32>
// WHITEN-NEXT:    %[[Y:.+]] = "aten.add.Tensor"(%[[Q1]], %[[C1]])
// WHITEN-NEXT:    return %[[Y]]

// int4: only the selected layer is compensated; `skip=` leaves the other one as quantized.
// W4-LABEL: func.func @mlp(
// W4:         %[[A0:[^:]+]]: tensor<64x2xf32> {spk.param = "mlp.up.lorc_a"},
// W4-NEXT:    %[[B0:[^:]+]]: tensor<2x32xf32> {spk.param = "mlp.up.lorc_b"}) -> tensor<4x16xf32> {
// W4-NEXT:    %[[Q:.+]] = "spk.linear_w4g"
// W4-NEXT:    %[[T:.+]] = "aten.linear"(%x, %[[B0]])
// W4-NEXT:    %[[C:.+]] = "aten.linear"(%[[T]], %[[A0]])
// W4-NEXT:    %[[H:.+]] = "aten.add.Tensor"(%[[Q]], %[[C]])
// W4-NEXT:    %[[R:.+]] = "aten.relu"(%[[H]])
// W4-NEXT:    %[[Y:.+]] = "spk.linear_w4g"(%[[R]]
// W4-NEXT:    return %[[Y]]

// 2:4 sparse linears are compressed linears too: the pruning error is compensated.
// SPARSE-LABEL: func.func @mlp(
// SPARSE:         %[[S:.+]] = "spk.linear_sparse24"(%x
// SPARSE-NEXT:    %[[T:.+]] = "aten.linear"(%x, %{{.+}}) : (tensor<4x32xf32>, tensor<2x32xf32>) -> tensor<4x2xf32>
// SPARSE-NEXT:    %[[C:.+]] = "aten.linear"(%[[T]], %{{.+}}) : (tensor<4x2xf32>, tensor<64x2xf32>) -> tensor<4x64xf32>
// SPARSE-NEXT:    "aten.add.Tensor"(%[[S]], %[[C]])

// A rank whose factors hold as many numbers as the weight is refused per layer, with a
// remark: 16 * (16 + 64) >= 16 * 64 for mlp.down; mlp.up (64x32) still gets its correction.
// BIG: remark: lorc: skipped layer 'mlp.down': rank 16 correction of a 16x64 weight is as large as the weight
// BIG-LABEL: func.func @mlp(
// BIG:         "spk.linear_w8"(%x
// BIG-NEXT:    "aten.linear"
// BIG-NEXT:    "aten.linear"
// BIG-NEXT:    "aten.add.Tensor"
// BIG-NEXT:    "aten.relu"
// BIG-NEXT:    "spk.linear_w8"
// BIG-NEXT:    return

// Float linears have no compression error: nothing changes.
// FLOAT-LABEL: func.func @mlp(
// FLOAT-NOT:     lorc
// FLOAT:         "aten.linear"(%x
// FLOAT-NEXT:    "aten.relu"
// FLOAT-NEXT:    "aten.linear"
// FLOAT-NEXT:    return
func.func @mlp(%x: tensor<4x32xf32>,
               %wu: tensor<64x32xf32> {spk.param = "mlp.up.weight"},
               %bu: tensor<64xf32> {spk.param = "mlp.up.bias"},
               %wd: tensor<16x64xf32> {spk.param = "mlp.down.weight"}) -> tensor<4x16xf32> {
  %0 = "aten.linear"(%x, %wu, %bu) : (tensor<4x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<4x64xf32>
  %1 = "aten.relu"(%0) : (tensor<4x64xf32>) -> tensor<4x64xf32>
  %2 = "aten.linear"(%1, %wd) : (tensor<4x64xf32>, tensor<16x64xf32>) -> tensor<4x16xf32>
  return %2 : tensor<4x16xf32>
}

// -----

// One weight read by two linears (a shared projection) gets one pair of factors and one
// correction per use.
// CHECK-LABEL: func.func @shared(
// CHECK:         %[[A:[^:]+]]: tensor<8x4xf32> {spk.param = "proj.lorc_a"},
// CHECK-NEXT:    %[[B:[^:]+]]: tensor<4x32xf32> {spk.param = "proj.lorc_b"}) -> (tensor<2x8xf32>, tensor<3x8xf32>) {
// CHECK-NEXT:    %[[P:.+]] = "spk.linear_w8"(%x,
// CHECK-NEXT:    %[[T:.+]] = "aten.linear"(%x, %[[B]])
// CHECK-NEXT:    %[[C:.+]] = "aten.linear"(%[[T]], %[[A]])
// CHECK-NEXT:    %[[S:.+]] = "aten.add.Tensor"(%[[P]], %[[C]])
// CHECK-NEXT:    %[[P2:.+]] = "spk.linear_w8"(%y,
// CHECK-NEXT:    %[[T2:.+]] = "aten.linear"(%y, %[[B]])
// CHECK-NEXT:    %[[C2:.+]] = "aten.linear"(%[[T2]], %[[A]])
// CHECK-NEXT:    %[[S2:.+]] = "aten.add.Tensor"(%[[P2]], %[[C2]])
// CHECK-NEXT:    return %[[S]], %[[S2]]
// Whitened: still one pair of factors (fitted to the pooled covariance of both uses' inputs)
// and one correction per use.
// WHITEN-LABEL: func.func @shared(
// WHITEN:         %[[A:[^:]+]]: tensor<8x2xf32> {spk.param = "proj.lorc_a"},
// WHITEN-NEXT:    %[[B:[^:]+]]: tensor<2x32xf32> {spk.param = "proj.lorc_b"}) -> (tensor<2x8xf32>, tensor<3x8xf32>) {
// WHITEN-NEXT:    %[[P:.+]] = "spk.linear_w8"(%x,
// WHITEN-NEXT:    %[[T:.+]] = "aten.linear"(%x, %[[B]])
// WHITEN-NEXT:    %[[C:.+]] = "aten.linear"(%[[T]], %[[A]])
// WHITEN-NEXT:    %[[S:.+]] = "aten.add.Tensor"(%[[P]], %[[C]])
// WHITEN-NEXT:    %[[P2:.+]] = "spk.linear_w8"(%y,
// WHITEN-NEXT:    %[[T2:.+]] = "aten.linear"(%y, %[[B]])
// WHITEN-NEXT:    %[[C2:.+]] = "aten.linear"(%[[T2]], %[[A]])
// WHITEN-NEXT:    %[[S2:.+]] = "aten.add.Tensor"(%[[P2]], %[[C2]])
// WHITEN-NEXT:    return %[[S]], %[[S2]]
func.func @shared(%x: tensor<2x32xf32>, %y: tensor<3x32xf32>,
                  %w: tensor<8x32xf32> {spk.param = "proj.weight"}) -> (tensor<2x8xf32>, tensor<3x8xf32>) {
  %0 = "aten.linear"(%x, %w) : (tensor<2x32xf32>, tensor<8x32xf32>) -> tensor<2x8xf32>
  %1 = "aten.linear"(%y, %w) : (tensor<3x32xf32>, tensor<8x32xf32>) -> tensor<3x8xf32>
  return %0, %1 : tensor<2x8xf32>, tensor<3x8xf32>
}
