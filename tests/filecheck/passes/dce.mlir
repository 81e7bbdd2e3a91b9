// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=dce | filecheck %s

// A dead chain dies in one sweep; live ops stay in order.

// CHECK-LABEL: func.func @dead_chain
// CHECK-NOT:     "aten.neg"
// CHECK-NOT:     "aten.exp"
// CHECK:         %[[R:.*]] = "aten.relu"(%x) :
// CHECK-NEXT:    return %[[R]] : tensor<4xf32>
func.func @dead_chain(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "aten.neg"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %1 = "aten.exp"(%0) : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %3 = "aten.add.Tensor"(%1, %2) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return %2 : tensor<4xf32>
}

// -----

// Impure ops stay even when unused: random numbers and dropout in training mode (they
// advance the RNG). Dropout in eval mode is pure and dies.

// CHECK-LABEL: func.func @impure_ops_kept
// CHECK:         "aten.rand"() {size = [4]} : () -> tensor<4xf32>
// CHECK-NEXT:    "aten.dropout"(%x) {p = 0.5, train = true} :
// CHECK-NEXT:    return %x : tensor<4xf32>
func.func @impure_ops_kept(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "aten.rand"() {size = [4]} : () -> tensor<4xf32>
  %1 = "aten.dropout"(%x) {p = 0.5, train = true} : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "aten.dropout"(%x) {p = 0.5, train = false} : (tensor<4xf32>) -> tensor<4xf32>
  return %x : tensor<4xf32>
}

// -----

// Parameter arguments nothing reads are removed (with their weights); user inputs are the
// calling convention and stay even when unused.

// CHECK-LABEL: func.func @dead_params
// CHECK-SAME:    (%x: tensor<8xf32>, %u: tensor<2xf32>, %w: tensor<16x8xf32> {spk.param = "w"}) -> tensor<16xf32> {
// CHECK-NOT:     spk.param = "l0.b"
// CHECK-NOT:     spk.param = "dead.w"
// CHECK:         %[[L:.*]] = "aten.linear"(%x, %w) :
// CHECK-NEXT:    return %[[L]] : tensor<16xf32>
func.func @dead_params(%x: tensor<8xf32>, %u: tensor<2xf32>, %w: tensor<16x8xf32> {spk.param = "w"}, %b: tensor<16xf32> {spk.param = "l0.b"}, %dw: tensor<3x3xf32> {spk.param = "dead.w"}) -> tensor<16xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<8xf32>, tensor<16x8xf32>) -> tensor<16xf32>
  %1 = "aten.t"(%dw) : (tensor<3x3xf32>) -> tensor<3x3xf32>
  return %0 : tensor<16xf32>
}

// -----

// Dead ops inside a fused group's region are erased; the group itself is live.

// CHECK-LABEL: func.func @dead_in_region
// CHECK:         %[[F:.*]] = "spk.fused"(%x) ({
// CHECK-NEXT:    ^bb0(%[[A:.*]]: tensor<4xf32>):
// CHECK-NEXT:      %[[R:.*]] = "aten.relu"(%[[A]]) :
// CHECK-NEXT:      "spk.yield"(%[[R]]) :
// CHECK-NEXT:    }) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    return %[[F]] : tensor<4xf32>
func.func @dead_in_region(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    %dead = "aten.sigmoid"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    %r = "aten.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%r) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  %1 = "spk.fused"(%x) ({
  ^bb0(%b: tensor<4xf32>):
    %s = "aten.tanh"(%b) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%s) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// An op with several results stays while any one of them is used.

// CHECK-LABEL: func.func @multi_result
// CHECK:         %[[M:.*]]:2 = "aten.max.dim"(%x) {dim = 1} : (tensor<4x8xf32>) -> (tensor<4xf32>, tensor<4xi64>)
// CHECK-NOT:     "aten.min.dim"
// CHECK:         return %[[M]]#1 : tensor<4xi64>
func.func @multi_result(%x: tensor<4x8xf32>) -> tensor<4xi64> {
  %0:2 = "aten.max.dim"(%x) {dim = 1} : (tensor<4x8xf32>) -> (tensor<4xf32>, tensor<4xi64>)
  %1:2 = "aten.min.dim"(%x) {dim = 1} : (tensor<4x8xf32>) -> (tensor<4xf32>, tensor<4xi64>)
  return %0#1 : tensor<4xi64>
}
