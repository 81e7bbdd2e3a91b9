// RUN: not spokeshave-opt %s --split-input-file 2>&1 | filecheck %s
// RUN: not spokeshave-opt %s 2>&1 | filecheck %s --check-prefix=NOSPLIT

// Malformed IR text. Every error reads `FILE:LINE:COL: error: ...` followed by the source
// line and a caret under the column, as mlir-opt reports them. With --split-input-file each
// case is reported and processing goes on with the next one (exit status 1); without it the
// first error stops everything. Never a Python traceback.

// CHECK-NOT: Traceback
// NOSPLIT-NOT: Traceback

func.func @undefined_value(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 6]]:20: error: use of undefined value '%y'
// CHECK-NEXT: {{^}}  %0 = "aten.relu"(%y) : (tensor<4xf32>) -> tensor<4xf32>{{$}}
// CHECK-NEXT: {{^}}                   ^{{$}}
// NOSPLIT: {{.*}}errors.mlir:[[# @LINE + 3]]:20: error: use of undefined value '%y'
// NOSPLIT-NOT: error:
// NOSPLIT-NOT: Traceback
  %0 = "aten.relu"(%y) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @redefinition(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:3: error: redefinition of SSA value '%0'
  %0 = "aten.neg"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @operand_type_mismatch(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:25: error: operand #0 of 'aten.relu' has type tensor<4xf32> but the op's type says tensor<4xf16>
  %0 = "aten.relu"(%x) : (tensor<4xf16>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:37: error: unknown element type 'q7'; known: f32, f64, f16, bf16, i64
func.func @unknown_element_type(%x: tensor<4xq7>) -> tensor<4xq7> {
  return %x : tensor<4xq7>
}

// -----

// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:38: error: malformed tensor type; expected e.g. tensor<8x?x384xf32>
func.func @malformed_tensor_type(%x: tensor<4xf32) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}

// -----

func.func @dense_attribute(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:35: error: this attribute kind is not supported: tensors belong in the weight store
  %0 = "aten.add.Tensor"(%x) {c = dense<1.0> : tensor<4xf32>} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @unterminated_string(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:39: error: unterminated string
  %0 = "aten.gelu"(%x) {approximate = "tanh} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @duplicate_attribute(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:41: error: duplicate attribute 'dim'
  %0 = "aten.softmax.int"(%x) {dim = 0, dim = 0} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @custom_syntax(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:8: error: expected an op name in quotes (generic form), found 'aten.relu'
  %0 = aten.relu %x : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @result_count(%x: tensor<4x8xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:3: error: 'aten.max.dim' defines 1 result names but its type lists 2 results
  %0 = "aten.max.dim"(%x) {dim = 1} : (tensor<4x8xf32>) -> (tensor<4xf32>, tensor<4xi64>)
  return %0 : tensor<4xf32>
}

// -----

func.func @no_such_result(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  %0:2 = "aten.max.dim"(%x) {dim = 1} : (tensor<4x8xf32>) -> (tensor<4xf32>, tensor<4xi64>)
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:10: error: '%0' has no result #2
  return %0#2 : tensor<4xf32>
}

// -----

// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:1: error: @return_type returns (tensor<4xf32>) but its signature says (tensor<8xf32>)
func.func @return_type(%x: tensor<4xf32>) -> tensor<8xf32> {
  return %x : tensor<4xf32>
}

// -----

func.func @missing_brace(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
// CHECK: {{.*}}errors.mlir:[[# @LINE + 2]]:1: error: expected '}' to close the block

// -----

func.func @twice(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:1: error: redefinition of function @twice
func.func @twice(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}

// -----

func.func @bad_loc(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:70: error: expected a line number in loc("file":line:col)
  %0 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32> loc("m.py":x)
  return %0 : tensor<4xf32>
}

// -----

func.func @hex_float_too_wide(%x: tensor<4xf32>) -> tensor<4xf32> {
// CHECK: {{.*}}errors.mlir:[[# @LINE + 1]]:39: error: hexadecimal float literal has more than 64 bits
  %0 = "aten.mul.Scalar"(%x) {other = 0x1FFF0000000000000 : f64} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// After the errors above, the valid case is still processed and printed.

// CHECK-LABEL: func.func @valid_after_errors
// CHECK:         %[[R:.*]] = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    return %[[R]] : tensor<4xf32>
// CHECK-NOT:     Traceback
func.func @valid_after_errors(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}
