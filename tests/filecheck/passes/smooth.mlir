// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="smooth" 2>&1 >/dev/null | filecheck %s --check-prefix=NO-CALIB
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="smooth" 2>/dev/null | filecheck %s
// RUN: not spokeshave-opt %s --pass-pipeline="smooth{alpha=1.5}" 2>&1 | filecheck %s --check-prefix=BAD-ALPHA
// RUN: not spokeshave-opt %s --pass-pipeline="smooth{alpha=high}" 2>&1 | filecheck %s --check-prefix=BAD-TYPE

// `smooth` computes its per-channel scales from calibration activations, which
// spokeshave-opt does not have: where there is a linear to smooth it refuses, naming
// itself, instead of guessing. The rewrite itself (norm weight/bias divided by s, linear
// columns multiplied by s) is tested numerically from Python (tests/test_outliers.py).

// BAD-ALPHA: error: pass 'smooth': option 'alpha' must be in [0, 1]; got 1.5
// BAD-TYPE: error: pass 'smooth': option 'alpha' expects float, got 'high'

// A LayerNorm feeding a linear: the case smooth rewrites; without calibration, an error.
// NO-CALIB: error: pass 'smooth' needs calibration data: pass calibration=[batches] to compiler.compile
func.func @ln_linear(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                     %b: tensor<8xf32> {spk.param = "ln.bias"},
                     %w: tensor<16x8xf32> {spk.param = "fc.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.layer_norm"(%x, %g, %b) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %1 : tensor<2x4x16xf32>
}

// -----

// GPT-2's Conv1D form (view/addmm/view) is a linear too: the same refusal.
// NO-CALIB: error: pass 'smooth' needs calibration data
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

// Nothing to smooth (a norm feeding no linear): no calibration needed, the IR is unchanged.
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
