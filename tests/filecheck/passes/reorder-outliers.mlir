// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="reorder-outliers" 2>&1 >/dev/null | filecheck %s --check-prefix=NO-CALIB
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="reorder-outliers" 2>/dev/null | filecheck %s
// RUN: not spokeshave-opt %s --pass-pipeline="reorder-outliers{metric=mean}" 2>&1 | filecheck %s --check-prefix=BAD-METRIC
// RUN: not spokeshave-opt %s --pass-pipeline="reorder-outliers{group=64}" 2>&1 | filecheck %s --check-prefix=BAD-OPTION

// `reorder-outliers` sorts channels by calibration activation magnitudes, which
// spokeshave-opt does not have: where there is a norm-fed linear it refuses, naming itself,
// instead of guessing an order. The rewrite (index_select of the norm input, permuted norm
// weight/bias and linear columns) is checked from Python (tests/test_outliers.py).

// BAD-METRIC: error: pass 'reorder-outliers': option 'metric' must be one of absmax, rms, weight; got 'mean'
// BAD-OPTION: error: pass 'reorder-outliers' has no option 'group'; its options: metric=<absmax|rms|weight>

// A LayerNorm feeding a linear: the case reorder-outliers rewrites; without calibration, an error.
// NO-CALIB: error: pass 'reorder-outliers' needs calibration data: pass calibration=[batches] to compiler.compile
func.func @ln_linear(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                     %b: tensor<8xf32> {spk.param = "ln.bias"},
                     %w: tensor<16x8xf32> {spk.param = "fc.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.layer_norm"(%x, %g, %b) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %1 : tensor<2x4x16xf32>
}

// -----

// GPT-2's Conv1D form (view/addmm/view) is a linear too: the same refusal.
// NO-CALIB: error: pass 'reorder-outliers' needs calibration data
func.func @conv1d(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                  %w: tensor<8x16xf32> {spk.param = "c_attn.weight"},
                  %c: tensor<16xf32> {spk.param = "c_attn.bias"}) -> tensor<2x4x16xf32> {
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.view"(%0) {size = [-1, 8]} : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
  %2 = "aten.addmm"(%c, %1, %w) : (tensor<16xf32>, tensor<8x8xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
  %3 = "aten.view"(%2) {size = [2, 4, 16]} : (tensor<8x16xf32>) -> tensor<2x4x16xf32>
  return %3 : tensor<2x4x16xf32>
}

// -----

// Nothing to reorder (a norm feeding no linear): no calibration needed, the IR is unchanged.
// CHECK-NOT:     func.func @ln_linear
// CHECK-NOT:     func.func @conv1d
// CHECK-LABEL: func.func @no_linear(
// CHECK:         %[[N:.*]] = "aten.layer_norm"(%x, %g) {normalized_shape = [8]}
// CHECK-NEXT:    %[[R:.*]] = "aten.relu"(%[[N]])
// CHECK-NEXT:    return %[[R]]
func.func @no_linear(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"}) -> tensor<2x4x8xf32> {
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.relu"(%0) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return %1 : tensor<2x4x8xf32>
}
