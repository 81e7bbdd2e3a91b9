// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=canonicalize,cse,dce | filecheck %s

// canonicalize exposes redundancy (the clone and the identity view are the input itself),
// cse merges the now identical ops, dce leaves nothing behind.

// CHECK-LABEL: func.func @canonicalize_exposes_cse
// CHECK:         %[[L:.*]] = "aten.linear"(%x, %w, %b) :
// CHECK-NEXT:    %[[G:.*]] = "aten.gelu"(%[[L]]) {approximate = "tanh"} :
// CHECK-NEXT:    %[[S:.*]] = "aten.add.Tensor"(%[[G]], %[[G]]) :
// CHECK-NEXT:    return %[[S]] : tensor<2x4x16xf32>
func.func @canonicalize_exposes_cse(%x: tensor<2x4x8xf32>, %w: tensor<16x8xf32> {spk.param = "w"}, %b: tensor<16xf32> {spk.param = "b"}) -> tensor<2x4x16xf32> {
  %0 = "aten.clone"(%x) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.view"(%x) {size = [2, 4, 8]} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.linear"(%0, %w, %b) : (tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<2x4x16xf32>
  %3 = "aten.linear"(%1, %w, %b) : (tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<2x4x16xf32>
  %4 = "aten.gelu"(%2) {approximate = "tanh"} : (tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  %5 = "aten.gelu"(%3) {approximate = "tanh"} : (tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  %6 = "aten.add.Tensor"(%4, %5) : (tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %6 : tensor<2x4x16xf32>
}

// -----

// Attention-style head split and merge: the permutes cancel, the view chain collapses to
// an identity and disappears; the dead score branch and the parameter only it read go.

// CHECK-LABEL: func.func @head_split_merge
// CHECK-NOT:     spk.param = "unused.scale"
// CHECK-NOT:     "aten.view"
// CHECK-NOT:     "aten.permute"
// CHECK-NOT:     "aten.mul.Tensor"
// CHECK:         %[[R:.*]] = "aten.relu"(%x) :
// CHECK-NEXT:    return %[[R]] : tensor<2x8x16xf32>
func.func @head_split_merge(%x: tensor<2x8x16xf32>, %scale: tensor<2x4x8x4xf32> {spk.param = "unused.scale"}) -> tensor<2x8x16xf32> {
  %0 = "aten.view"(%x) {size = [2, 8, 4, 4]} : (tensor<2x8x16xf32>) -> tensor<2x8x4x4xf32>
  %1 = "aten.permute"(%0) {dims = [0, 2, 1, 3]} : (tensor<2x8x4x4xf32>) -> tensor<2x4x8x4xf32>
  %2 = "aten.mul.Tensor"(%1, %scale) : (tensor<2x4x8x4xf32>, tensor<2x4x8x4xf32>) -> tensor<2x4x8x4xf32>
  %3 = "aten.permute"(%1) {dims = [0, 2, 1, 3]} : (tensor<2x4x8x4xf32>) -> tensor<2x8x4x4xf32>
  %4 = "aten.view"(%3) {size = [2, 8, 16]} : (tensor<2x8x4x4xf32>) -> tensor<2x8x16xf32>
  %5 = "aten.relu"(%4) : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  return %5 : tensor<2x8x16xf32>
}

// -----

// Symbolic sizes: static ones become constants, constant arithmetic folds, duplicate
// queries of the dynamic batch merge, and the view keeps its operands.

// CHECK-LABEL: func.func @symbolic_sizes
// CHECK-DAG:     %[[B:.*]] = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x4x8xf32>) -> i64
// CHECK-DAG:     %[[C32:.*]] = "spk.constant"() {value = 32} : () -> i64
// CHECK-NOT:     "aten.sym_size.int"
// CHECK-NOT:     "py.operator.mul"(%{{.*}}, %{{.*}}) : (i64, i64) -> i64{{$}}
// CHECK:         %[[V:.*]] = "aten.view"(%x, %[[B]], %[[C32]]) {operand_segments = [1, 2]} : (tensor<?x4x8xf32>, i64, i64) -> tensor<?x32xf32>
// CHECK-NEXT:    return %[[V]] : tensor<?x32xf32>
func.func @symbolic_sizes(%x: tensor<?x4x8xf32>) -> tensor<?x32xf32> {
  %0 = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x4x8xf32>) -> i64
  %1 = "aten.sym_size.int"(%x) {dim = 1} : (tensor<?x4x8xf32>) -> i64
  %2 = "aten.sym_size.int"(%x) {dim = 2} : (tensor<?x4x8xf32>) -> i64
  %3 = "py.operator.mul"(%1, %2) : (i64, i64) -> i64
  %4 = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x4x8xf32>) -> i64
  %5 = "aten.view"(%x, %4, %3) {operand_segments = [1, 2]} : (tensor<?x4x8xf32>, i64, i64) -> tensor<?x32xf32>
  return %5 : tensor<?x32xf32>
}
