// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=fold-constants | filecheck %s
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=fold-constants,dce | filecheck %s --check-prefix=DCE

// aten.t of a parameter becomes a new parameter `folded.t` (its data is computed into the
// weight store); the old parameter is then dead and dce drops it.

// CHECK-LABEL: func.func @fold_t
// CHECK:         %w: tensor<8x16xf32> {spk.param = "w"}
// CHECK:         %[[T:.*]]: tensor<16x8xf32> {spk.param = "folded.t"}) -> tensor<2x16xf32> {
// CHECK-NOT:     "aten.t"
// CHECK:         %[[L:.*]] = "aten.linear"(%x, %[[T]]) : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2x16xf32>
// CHECK-NEXT:    return %[[L]]
// DCE-LABEL:   func.func @fold_t
// DCE-SAME:      (%x: tensor<2x8xf32>, %[[T:.*]]: tensor<16x8xf32> {spk.param = "folded.t"}) -> tensor<2x16xf32>
// DCE-NEXT:      %[[L:.*]] = "aten.linear"(%x, %[[T]])
// DCE-NEXT:      return %[[L]]
func.func @fold_t(%x: tensor<2x8xf32>, %w: tensor<8x16xf32> {spk.param = "w"}) -> tensor<2x16xf32> {
  %0 = "aten.t"(%w) : (tensor<8x16xf32>) -> tensor<16x8xf32>
  %1 = "aten.linear"(%x, %0) : (tensor<2x8xf32>, tensor<16x8xf32>) -> tensor<2x16xf32>
  return %1 : tensor<2x16xf32>
}

// -----

// Folding chains through earlier folded results and spk.constant scalars; everything that
// depends only on parameters collapses into one new parameter.

// CHECK-LABEL: func.func @fold_chain
// CHECK-NOT:     "aten.t"
// CHECK-NOT:     "aten.mul.Scalar"
// CHECK-NOT:     "aten.add.Tensor"
// CHECK:         %[[L:.*]] = "aten.linear"(%x, %folded.add.Tensor) :
// CHECK-NEXT:    return %[[L]]
// DCE-LABEL:   func.func @fold_chain
// DCE-NOT:       spk.param = "w"
// DCE-NOT:       spk.param = "s"
// DCE:           %folded.add.Tensor: tensor<16x8xf32> {spk.param = "folded.add.Tensor"}) -> tensor<4x16xf32> {
// DCE-NOT:       spk.constant
// DCE:           "aten.linear"(%x, %folded.add.Tensor)
func.func @fold_chain(%x: tensor<4x8xf32>, %w: tensor<8x16xf32> {spk.param = "w"}, %s: tensor<16x8xf32> {spk.param = "s"}) -> tensor<4x16xf32> {
  %c = "spk.constant"() {value = 0.5} : () -> f64
  %0 = "aten.t"(%w) : (tensor<8x16xf32>) -> tensor<16x8xf32>
  %1 = "aten.mul.Scalar"(%0, %c) {operand_segments = [1, 1]} : (tensor<16x8xf32>, f64) -> tensor<16x8xf32>
  %2 = "aten.add.Tensor"(%1, %s) : (tensor<16x8xf32>, tensor<16x8xf32>) -> tensor<16x8xf32>
  %3 = "aten.linear"(%x, %2) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  return %3 : tensor<4x16xf32>
}

// -----

// Ops that read a user input, impure ops, and ops with non-tensor results are not folded.

// CHECK-LABEL: func.func @not_foldable
// CHECK:         %[[A:.*]] = "aten.add.Tensor"(%x, %w) :
// CHECK-NEXT:    %[[D:.*]] = "aten.dropout"(%w) {p = 0.5, train = true} :
// CHECK-NEXT:    %[[S:.*]] = "aten.sym_size.int"(%w) {dim = 0} : (tensor<4xf32>) -> i64
// CHECK-NEXT:    return %[[A]], %[[D]], %[[S]] :
// DCE-LABEL:   func.func @not_foldable
// DCE-SAME:      {spk.param = "w"}
func.func @not_foldable(%x: tensor<4xf32>, %w: tensor<4xf32> {spk.param = "w"}) -> (tensor<4xf32>, tensor<4xf32>, i64) {
  %0 = "aten.add.Tensor"(%x, %w) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %1 = "aten.dropout"(%w) {p = 0.5, train = true} : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "aten.sym_size.int"(%w) {dim = 0} : (tensor<4xf32>) -> i64
  return %0, %1, %2 : tensor<4xf32>, tensor<4xf32>, i64
}

// -----

// A broadcast that would materialise many more elements than its input (here 1x64 ->
// 2048x64, over max-new-elements = 65536) stays a cheap expand at run time.

// CHECK-LABEL: func.func @large_broadcast_kept
// CHECK:         %[[E:.*]] = "aten.expand"(%b) {size = [2048, 64]} : (tensor<1x64xf32>) -> tensor<2048x64xf32>
// CHECK-NEXT:    %[[A:.*]] = "aten.add.Tensor"(%x, %[[E]]) :
// DCE-LABEL:   func.func @large_broadcast_kept
// DCE:           "aten.expand"(%b)
func.func @large_broadcast_kept(%b: tensor<1x64xf32> {spk.param = "b"}, %x: tensor<2048x64xf32>) -> tensor<2048x64xf32> {
  %0 = "aten.expand"(%b) {size = [2048, 64]} : (tensor<1x64xf32>) -> tensor<2048x64xf32>
  %1 = "aten.add.Tensor"(%x, %0) : (tensor<2048x64xf32>, tensor<2048x64xf32>) -> tensor<2048x64xf32>
  return %1 : tensor<2048x64xf32>
}

// -----

// An op that cannot be evaluated (inconsistent shapes torch rejects, or an operator that
// does not exist) is not folded and does not crash the pass: a fold that fails is no fold.

// CHECK-LABEL: func.func @unevaluable
// CHECK:         %[[M:.*]] = "aten.mm"(%a, %b) :
// CHECK-NEXT:    %[[U:.*]] = "aten.no_such_op"(%a) :
// CHECK-NEXT:    return %[[M]], %[[U]] :
// DCE-LABEL:   func.func @unevaluable
// DCE:           "aten.mm"(%a, %b)
func.func @unevaluable(%a: tensor<4x8xf32> {spk.param = "a"}, %b: tensor<4x8xf32> {spk.param = "b"}) -> (tensor<4x4xf32>, tensor<4x8xf32>) {
  %0 = "aten.mm"(%a, %b) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x4xf32>
  %1 = "aten.no_such_op"(%a) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return %0, %1 : tensor<4x4xf32>, tensor<4x8xf32>
}
