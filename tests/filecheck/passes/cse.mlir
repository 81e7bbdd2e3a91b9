// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=cse | filecheck %s

// Identical pure ops are merged; the merge cascades to users that become identical.

// CHECK-LABEL: func.func @merge_chain
// CHECK:         %[[L:.*]] = "aten.linear"(%x, %w) :
// CHECK-NEXT:    %[[G:.*]] = "aten.gelu"(%[[L]]) :
// CHECK-NEXT:    %[[A:.*]] = "aten.add.Tensor"(%[[G]], %[[G]]) :
// CHECK-NEXT:    return %[[A]] : tensor<4x16xf32>
func.func @merge_chain(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "w"}) -> tensor<4x16xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  %1 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
  %2 = "aten.gelu"(%0) : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %3 = "aten.gelu"(%1) : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %4 = "aten.add.Tensor"(%2, %3) : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  return %4 : tensor<4x16xf32>
}

// -----

// Different attributes, operand order or result types make different expressions.

// CHECK-LABEL: func.func @no_merge_when_different
// CHECK:         %[[A:.*]] = "aten.gelu"(%x) :
// CHECK-NEXT:    %[[B:.*]] = "aten.gelu"(%x) {approximate = "tanh"} :
// CHECK-NEXT:    %[[C:.*]] = "aten.sub.Tensor"(%x, %y) :
// CHECK-NEXT:    %[[D:.*]] = "aten.sub.Tensor"(%y, %x) :
// CHECK-NEXT:    %[[E:.*]] = "aten._to_copy"(%x) {dtype = f16} : (tensor<4xf32>) -> tensor<4xf16>
// CHECK-NEXT:    %[[F:.*]] = "aten._to_copy"(%x) {dtype = bf16} : (tensor<4xf32>) -> tensor<4xbf16>
// CHECK-NEXT:    return %[[A]], %[[B]], %[[C]], %[[D]], %[[E]], %[[F]] :
func.func @no_merge_when_different(%x: tensor<4xf32>, %y: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf16>, tensor<4xbf16>) {
  %0 = "aten.gelu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %1 = "aten.gelu"(%x) {approximate = "tanh"} : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "aten.sub.Tensor"(%x, %y) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %3 = "aten.sub.Tensor"(%y, %x) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %4 = "aten._to_copy"(%x) {dtype = f16} : (tensor<4xf32>) -> tensor<4xf16>
  %5 = "aten._to_copy"(%x) {dtype = bf16} : (tensor<4xf32>) -> tensor<4xbf16>
  return %0, %1, %2, %3, %4, %5 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf16>, tensor<4xbf16>
}

// -----

// Random ops and dropout in training mode are impure: never merged. Dropout in eval mode
// is pure and is merged.

// CHECK-LABEL: func.func @impure_not_merged
// CHECK:         %[[R0:.*]] = "aten.rand"() {size = [4]} : () -> tensor<4xf32>
// CHECK-NEXT:    %[[R1:.*]] = "aten.rand"() {size = [4]} : () -> tensor<4xf32>
// CHECK-NEXT:    %[[D0:.*]] = "aten.dropout"(%x) {p = 0.5, train = true} :
// CHECK-NEXT:    %[[D1:.*]] = "aten.dropout"(%x) {p = 0.5, train = true} :
// CHECK-NEXT:    %[[E:.*]] = "aten.dropout"(%x) {p = 0.5, train = false} :
// CHECK-NOT:     "aten.dropout"
// CHECK:         return %[[R0]], %[[R1]], %[[D0]], %[[D1]], %[[E]], %[[E]] :
func.func @impure_not_merged(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) {
  %0 = "aten.rand"() {size = [4]} : () -> tensor<4xf32>
  %1 = "aten.rand"() {size = [4]} : () -> tensor<4xf32>
  %2 = "aten.dropout"(%x) {p = 0.5, train = true} : (tensor<4xf32>) -> tensor<4xf32>
  %3 = "aten.dropout"(%x) {p = 0.5, train = true} : (tensor<4xf32>) -> tensor<4xf32>
  %4 = "aten.dropout"(%x) {p = 0.5, train = false} : (tensor<4xf32>) -> tensor<4xf32>
  %5 = "aten.dropout"(%x) {p = 0.5, train = false} : (tensor<4xf32>) -> tensor<4xf32>
  return %0, %1, %2, %3, %4, %5 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
}

// -----

// Fused groups are isolated from above: CSE runs inside each region on its own and never
// merges an inner op with an outer one, nor two ops that carry regions.

// CHECK-LABEL: func.func @fused_regions
// CHECK:         %[[OUT:.*]] = "aten.relu"(%x) :
// CHECK-NEXT:    %[[F0:.*]] = "spk.fused"(%x) ({
// CHECK-NEXT:    ^bb0(%[[A:.*]]: tensor<4xf32>):
// CHECK-NEXT:      %[[R:.*]] = "aten.relu"(%[[A]]) :
// CHECK-NEXT:      %[[S:.*]] = "aten.mul.Tensor"(%[[R]], %[[R]]) :
// CHECK-NEXT:      "spk.yield"(%[[S]]) :
// CHECK-NEXT:    }) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    %[[F1:.*]] = "spk.fused"(%x) ({
// CHECK:         return %[[OUT]], %[[F0]], %[[F1]] :
func.func @fused_regions(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) {
  %0 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  %1 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    %r0 = "aten.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    %r1 = "aten.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    %m = "aten.mul.Tensor"(%r0, %r1) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%m) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  %2 = "spk.fused"(%x) ({
  ^bb0(%b: tensor<4xf32>):
    %r2 = "aten.relu"(%b) : (tensor<4xf32>) -> tensor<4xf32>
    %n = "aten.mul.Tensor"(%r2, %r2) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%n) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0, %1, %2 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
}

// -----

// Scalar ops merge too (two queries of the same dynamic size); CSE does not erase dead
// ops: that is dce's job.

// CHECK-LABEL: func.func @scalars_and_dead_ops
// CHECK:         %[[S:.*]] = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x4xf32>) -> i64
// CHECK-NEXT:    %[[M:.*]] = "py.operator.mul"(%[[S]], %[[S]]) : (i64, i64) -> i64
// CHECK-NEXT:    %[[DEAD:.*]] = "aten.neg"(%x) :
// CHECK-NEXT:    return %[[M]] : i64
func.func @scalars_and_dead_ops(%x: tensor<?x4xf32>) -> i64 {
  %0 = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x4xf32>) -> i64
  %1 = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x4xf32>) -> i64
  %2 = "py.operator.mul"(%0, %1) : (i64, i64) -> i64
  %3 = "aten.neg"(%x) : (tensor<?x4xf32>) -> tensor<?x4xf32>
  return %2 : i64
}
