// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split" 2>&1 >/dev/null | filecheck %s --check-prefix=ERR
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="outlier-split{threshold=4.0}" 2>/dev/null | filecheck %s
// RUN: not spokeshave-opt %s --pass-pipeline="outlier-split{threshold=0}" 2>&1 | filecheck %s --check-prefix=BAD-THRESHOLD
// RUN: not spokeshave-opt %s --pass-pipeline="outlier-split{threshold=big}" 2>&1 | filecheck %s --check-prefix=BAD-TYPE

// BAD-THRESHOLD: error: pass 'outlier-split': option 'threshold' must be > 0; got 0.0
// BAD-TYPE: error: pass 'outlier-split': option 'threshold' expects float, got 'big'

// Which input channels are outliers comes from calibration activations, which spokeshave-opt
// does not have: with a linear to split, the pass refuses and names itself. The rewrite
// itself (outlier columns in float, the rest int8) is tested from Python
// (tests/test_outliers.py); here the op it produces, `spk.linear_w8a8_split`, is checked
// to parse, verify and print back, and to be refused when malformed.

// ERR: error: pass 'outlier-split' needs calibration data: pass calibration=[batches] to compiler.compile
func.func @linear(%x: tensor<2x4x8xf32>, %w: tensor<16x8xf32> {spk.param = "fc.weight"},
                  %b: tensor<16xf32> {spk.param = "fc.bias"}) -> tensor<2x4x16xf32> {
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
  %0 = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi) : (tensor<2x4x8xf32>, tensor<16x8xi8>, tensor<16xf32>, tensor<16x3xf32>, tensor<2xi64>) -> tensor<2x4x16xf32>
  return %0 : tensor<2x4x16xf32>
}
