// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=canonicalize | filecheck %s

// Identity copies and casts fold to their input; a dtype-changing cast stays.

// CHECK-LABEL: func.func @identity_copies
// CHECK-NOT:     "aten.clone"
// CHECK-NOT:     "aten.detach"
// CHECK-NOT:     "aten.contiguous"
// CHECK-NOT:     "aten.alias"
// CHECK:         %[[CAST:.*]] = "aten._to_copy"(%x) {dtype = f16} : (tensor<4x8xf32>) -> tensor<4x8xf16>
// CHECK-NEXT:    return %x, %[[CAST]] : tensor<4x8xf32>, tensor<4x8xf16>
func.func @identity_copies(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf16>) {
  %0 = "aten.clone"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = "aten.detach"(%0) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %2 = "aten.contiguous"(%1) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %3 = "aten.alias"(%2) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %4 = "aten._to_copy"(%3) {dtype = f32} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %5 = "aten._to_copy"(%4) {dtype = f16} : (tensor<4x8xf32>) -> tensor<4x8xf16>
  return %4, %5 : tensor<4x8xf32>, tensor<4x8xf16>
}

// -----

// Dropout folds away in eval mode (train = false) only; in training mode it is random.

// CHECK-LABEL: func.func @dropout_eval_vs_train
// CHECK-NOT:     train = false
// CHECK:         %[[D:.*]] = "aten.dropout"(%x) {p = 0.1, train = true}
// CHECK-NEXT:    return %x, %[[D]]
func.func @dropout_eval_vs_train(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %0 = "aten.dropout"(%x) {p = 0.1, train = false} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = "aten.dropout"(%x) {p = 0.1, train = true} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return %0, %1 : tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// A reshape to the shape it already has is the identity (also with one dynamic dim);
// expand needs fully static shapes, since it may broadcast a dynamic dim from 1.

// CHECK-LABEL: func.func @identity_reshapes
// CHECK-NOT:     "aten.view"
// CHECK-NOT:     "aten.reshape"
// CHECK:         %[[E:.*]] = "aten.expand"(%y) {size = [-1, 8]} : (tensor<?x8xf32>) -> tensor<?x8xf32>
// CHECK-NEXT:    return %x, %y, %[[E]] :
func.func @identity_reshapes(%x: tensor<4x8xf32>, %y: tensor<?x8xf32>) -> (tensor<4x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>) {
  %0 = "aten.view"(%x) {size = [4, 8]} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = "aten.expand"(%0) {size = [4, 8]} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %2 = "aten.reshape"(%y) {shape = [-1, 8]} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %3 = "aten.expand"(%y) {size = [-1, 8]} : (tensor<?x8xf32>) -> tensor<?x8xf32>
  return %1, %2, %3 : tensor<4x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>
}

// -----

// view(view(x, a), b) -> view(x, b); the intermediate view dies.

// CHECK-LABEL: func.func @reshape_chain
// CHECK:         %[[V:.*]] = "aten.view"(%x) {size = [8, 4]} : (tensor<2x16xf32>) -> tensor<8x4xf32>
// CHECK-NEXT:    return %[[V]] : tensor<8x4xf32>
func.func @reshape_chain(%x: tensor<2x16xf32>) -> tensor<8x4xf32> {
  %0 = "aten.view"(%x) {size = [32]} : (tensor<2x16xf32>) -> tensor<32xf32>
  %1 = "aten.view"(%0) {size = [4, 8]} : (tensor<32xf32>) -> tensor<4x8xf32>
  %2 = "aten.view"(%1) {size = [8, 4]} : (tensor<4x8xf32>) -> tensor<8x4xf32>
  return %2 : tensor<8x4xf32>
}

// -----

// A slice covering the whole dim folds; a partial one stays.

// CHECK-LABEL: func.func @full_slice
// CHECK:         %[[S:.*]] = "aten.slice.Tensor"(%x) {dim = 1, start = 1} : (tensor<4x8xf32>) -> tensor<4x7xf32>
// CHECK-NEXT:    return %x, %[[S]] :
func.func @full_slice(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x7xf32>) {
  %0 = "aten.slice.Tensor"(%x) {dim = 1, start = 0, end = 9223372036854775807} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = "aten.slice.Tensor"(%0) {dim = 0, end = 4} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %2 = "aten.slice.Tensor"(%1) {dim = 1, start = 1} : (tensor<4x8xf32>) -> tensor<4x7xf32>
  return %1, %2 : tensor<4x8xf32>, tensor<4x7xf32>
}

// -----

// permute(permute(x, a), b) composes into one permute; an identity permute disappears.

// CHECK-LABEL: func.func @permute_composition
// CHECK:         %[[P:.*]] = "aten.permute"(%x) {dims = [2, 0, 1]} : (tensor<2x3x4xf32>) -> tensor<4x2x3xf32>
// CHECK-NEXT:    return %[[P]], %x :
func.func @permute_composition(%x: tensor<2x3x4xf32>) -> (tensor<4x2x3xf32>, tensor<2x3x4xf32>) {
  %0 = "aten.permute"(%x) {dims = [1, 2, 0]} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
  %1 = "aten.permute"(%0) {dims = [1, 2, 0]} : (tensor<3x4x2xf32>) -> tensor<4x2x3xf32>
  %2 = "aten.permute"(%1) {dims = [1, 2, 0]} : (tensor<4x2x3xf32>) -> tensor<2x3x4xf32>
  return %1, %2 : tensor<4x2x3xf32>, tensor<2x3x4xf32>
}

// -----

// t(t(x)) and transpose(transpose(x, 0, 1), 1, 0) cancel; transposes of different dim
// pairs do not, even where (as here) the types alone would allow it.

// CHECK-LABEL: func.func @transpose_cancel
// CHECK:         %[[A:.*]] = "aten.transpose.int"(%y) {dim0 = 0, dim1 = 1} : (tensor<3x3x3xf32>) -> tensor<3x3x3xf32>
// CHECK-NEXT:    %[[B:.*]] = "aten.transpose.int"(%[[A]]) {dim0 = 1, dim1 = 2} : (tensor<3x3x3xf32>) -> tensor<3x3x3xf32>
// CHECK-NEXT:    return %x, %y, %[[B]] :
func.func @transpose_cancel(%x: tensor<4x8xf32>, %y: tensor<3x3x3xf32>) -> (tensor<4x8xf32>, tensor<3x3x3xf32>, tensor<3x3x3xf32>) {
  %0 = "aten.t"(%x) : (tensor<4x8xf32>) -> tensor<8x4xf32>
  %1 = "aten.t"(%0) : (tensor<8x4xf32>) -> tensor<4x8xf32>
  %2 = "aten.transpose.int"(%y) {dim0 = 0, dim1 = 1} : (tensor<3x3x3xf32>) -> tensor<3x3x3xf32>
  %3 = "aten.transpose.int"(%2) {dim0 = 1, dim1 = 0} : (tensor<3x3x3xf32>) -> tensor<3x3x3xf32>
  %4 = "aten.transpose.int"(%2) {dim0 = 1, dim1 = 2} : (tensor<3x3x3xf32>) -> tensor<3x3x3xf32>
  return %1, %3, %4 : tensor<4x8xf32>, tensor<3x3x3xf32>, tensor<3x3x3xf32>
}

// -----

// x*1, x/1 and x-0 fold on floats.

// CHECK-LABEL: func.func @arith_identities
// CHECK-NOT:     "aten.mul.Scalar"
// CHECK-NOT:     "aten.div.Scalar"
// CHECK-NOT:     "aten.sub.Scalar"
// CHECK:         return %x : tensor<4xf32>
func.func @arith_identities(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "aten.mul.Scalar"(%x) {other = 1} : (tensor<4xf32>) -> tensor<4xf32>
  %1 = "aten.div.Scalar"(%0) {other = 1.0} : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "aten.sub.Scalar"(%1) {other = 0} : (tensor<4xf32>) -> tensor<4xf32>
  return %2 : tensor<4xf32>
}

// -----

// x+0 is the identity on integers but not on floats (-0.0 + 0 = +0.0), so the float add
// must stay. x*2 is no identity, and an op with a non-default alpha is left alone.

// CHECK-LABEL: func.func @add_zero_int_only
// CHECK:         %[[F:.*]] = "aten.add.Scalar"(%f) {other = 0} : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    %[[M:.*]] = "aten.mul.Scalar"(%f) {other = 2} : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    %[[S:.*]] = "aten.sub.Scalar"(%i) {other = 0, alpha = 2} : (tensor<4xi64>) -> tensor<4xi64>
// CHECK-NEXT:    return %[[F]], %[[M]], %i, %[[S]] :
func.func @add_zero_int_only(%f: tensor<4xf32>, %i: tensor<4xi64>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xi64>, tensor<4xi64>) {
  %0 = "aten.add.Scalar"(%f) {other = 0} : (tensor<4xf32>) -> tensor<4xf32>
  %1 = "aten.mul.Scalar"(%f) {other = 2} : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "aten.add.Scalar"(%i) {other = 0} : (tensor<4xi64>) -> tensor<4xi64>
  %3 = "aten.sub.Scalar"(%i) {other = 0, alpha = 2} : (tensor<4xi64>) -> tensor<4xi64>
  return %0, %1, %2, %3 : tensor<4xf32>, tensor<4xf32>, tensor<4xi64>, tensor<4xi64>
}

// -----

// The size of a static dim becomes a constant; a dynamic dim's size stays a query.

// CHECK-LABEL: func.func @static_sym_size
// CHECK-DAG:     %[[C:.*]] = "spk.constant"() {value = 8} : () -> i64
// CHECK-DAG:     %[[D:.*]] = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x8xf32>) -> i64
// CHECK:         return %[[D]], %[[C]] : i64, i64
func.func @static_sym_size(%x: tensor<?x8xf32>) -> (i64, i64) {
  %0 = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x8xf32>) -> i64
  %1 = "aten.sym_size.int"(%x) {dim = -1} : (tensor<?x8xf32>) -> i64
  return %0, %1 : i64, i64
}

// -----

// Arithmetic on constant scalars is evaluated; a division by zero is left for run time.

// CHECK-LABEL: func.func @scalar_folding
// CHECK-DAG:     %[[C:.*]] = "spk.constant"() {value = 24} : () -> i64
// CHECK-DAG:     %[[Z:.*]] = "spk.constant"() {value = 0} : () -> i64
// CHECK-DAG:     %[[DIV:.*]] = "py.operator.floordiv"(%[[C]], %[[Z]]) : (i64, i64) -> i64
// CHECK-NOT:     "py.operator.mul"
// CHECK:         return %[[C]], %[[DIV]] : i64, i64
func.func @scalar_folding(%x: tensor<2x3x4xf32>) -> (i64, i64) {
  %0 = "aten.sym_size.int"(%x) {dim = 1} : (tensor<2x3x4xf32>) -> i64
  %1 = "aten.sym_size.int"(%x) {dim = 2} : (tensor<2x3x4xf32>) -> i64
  %2 = "py.operator.mul"(%0, %1) : (i64, i64) -> i64
  %3 = "spk.constant"() {value = 2} : () -> i64
  %4 = "py.operator.mul"(%2, %3) : (i64, i64) -> i64
  %5 = "spk.constant"() {value = 0} : () -> i64
  %6 = "py.operator.floordiv"(%4, %5) : (i64, i64) -> i64
  return %4, %6 : i64, i64
}
