// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline=cse 2>&1 | filecheck %s

// The verifier runs before the pipeline (and after every pass). A broken invariant is
// reported at the op's location, names the op, and says what is wrong; processing goes on
// with the next case. Never a Python traceback.

// CHECK-NOT: Traceback

func.func @linear_in_features(%x: tensor<4x8xf32>, %w: tensor<16x9xf32> {spk.param = "w"}) -> tensor<4x16xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "aten.linear": input's last dim 8 != weight's in-features 9
  %0 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x9xf32>) -> tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}

// -----

func.func @linear_bias(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "w"}, %b: tensor<8xf32> {spk.param = "b"}) -> tensor<4x16xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "aten.linear": bias must be [16], got tensor<8xf32>
  %0 = "aten.linear"(%x, %w, %b) : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}

// -----

func.func @inferred_result_type(%x: tensor<4x8xf32>) -> tensor<8x8xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "aten.relu": result type (tensor<8x8xf32>) does not match the inferred (tensor<4x8xf32>)
  %0 = "aten.relu"(%x) : (tensor<4x8xf32>) -> tensor<8x8xf32>
  return %0 : tensor<8x8xf32>
}

// -----

func.func @fused_yield_type(%x: tensor<4xf32>) -> tensor<4xf16> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "spk.fused": spk.yield gives (tensor<4xf32>) but the op returns (tensor<4xf16>)
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    %1 = "aten.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%1) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf16>
  return %0 : tensor<4xf16>
}

// -----

func.func @fused_region_args(%x: tensor<4xf32>) -> tensor<8xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "spk.fused": the region's arguments must have the operand types
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<8xf32>):
    "spk.yield"(%a) : (tensor<8xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<8xf32>
  return %0 : tensor<8xf32>
}

// -----

func.func @fused_isolated(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:5: error: verification failed: op "aten.relu": operand #0 (a block argument) does not dominate this use
    %1 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%1) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @yield_outside_fused(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "spk.yield": spk.yield only ends a spk.fused region
  "spk.yield"(%x) : (tensor<4xf32>) -> ()
  return %x : tensor<4xf32>
}

// -----

func.func @gelu_approximate(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "aten.gelu": approximate must be "none" or "tanh", got 'erf'
  %0 = "aten.gelu"(%x) {approximate = "erf"} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @layer_norm_shape(%x: tensor<2x8xf32>, %g: tensor<8xf32> {spk.param = "g"}) -> tensor<2x8xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "aten.layer_norm": normalized_shape [16] does not match the trailing dims of tensor<2x8xf32>
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [16]} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @softmax_dim(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "aten.softmax.int": dim 2 out of range for tensor<2x8xf32>
  %0 = "aten.softmax.int"(%x) {dim = 2} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @constant_type() -> i64 {
// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:3: error: verification failed: op "spk.constant": value 1.5 does not fit type i64
  %0 = "spk.constant"() {value = 1.5} : () -> i64
  return %0 : i64
}

// -----

// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:1: error: verification failed: @param_twice: parameter 'w' is bound to two arguments
func.func @param_twice(%a: tensor<4xf32> {spk.param = "w"}, %b: tensor<4xf32> {spk.param = "w"}) -> tensor<4xf32> {
  return %a : tensor<4xf32>
}

// -----

// CHECK: {{.*}}verifier-errors.mlir:[[# @LINE + 1]]:1: error: parameter 'p' has dynamic shape tensor<?x4xf32>; parameters must be static
func.func @dynamic_param(%x: tensor<?x4xf32> {spk.param = "p"}) -> tensor<?x4xf32> {
  return %x : tensor<?x4xf32>
}

// -----

// CHECK-LABEL: func.func @valid_after_errors
// CHECK:         %[[L:.*]] = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
// CHECK-NEXT:    return %[[L]] : tensor<4x16xf32>
// CHECK-NOT:     Traceback
func.func @valid_after_errors(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "w"}) -> tensor<4x16xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  %1 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}
