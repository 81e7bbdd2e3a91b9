// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=gqa-attention | filecheck %s

// HF's repeat_kv, as torch.export writes it (unsqueeze at dim 2, expand by n_rep = 2, view
// merging the two head dims), on both K and V: the attention takes the unrepeated heads
// with enable_gqa, and the repeats (now unread) are gone.
// CHECK-LABEL: func.func @repeat_kv
// CHECK-NOT:     "aten.unsqueeze"
// CHECK-NOT:     "aten.expand"
// CHECK:         %[[A:.*]] = "aten.scaled_dot_product_attention"(%q, %k, %v, %mask) {scale = 0.25, enable_gqa = true} : (tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x1x?x?xi1>) -> tensor<?x4x?x16xf32>
// CHECK-NEXT:    return %[[A]]
func.func @repeat_kv(%q: tensor<?x4x?x16xf32>, %k: tensor<?x2x?x16xf32>, %v: tensor<?x2x?x16xf32>, %mask: tensor<?x1x?x?xi1>) -> tensor<?x4x?x16xf32> {
  %b = "aten.sym_size.int"(%q) {dim = 0} : (tensor<?x4x?x16xf32>) -> i64
  %s = "aten.sym_size.int"(%q) {dim = 2} : (tensor<?x4x?x16xf32>) -> i64
  %c2 = "spk.constant"() {value = 2} : () -> i64
  %c4 = "spk.constant"() {value = 4} : () -> i64
  %c16 = "spk.constant"() {value = 16} : () -> i64
  %0 = "aten.unsqueeze"(%k) {dim = 2} : (tensor<?x2x?x16xf32>) -> tensor<?x2x1x?x16xf32>
  %1 = "aten.expand"(%0, %b, %c2, %c2, %s, %c16) {operand_segments = [1, 5, 0]} : (tensor<?x2x1x?x16xf32>, i64, i64, i64, i64, i64) -> tensor<?x2x2x?x16xf32>
  %2 = "aten.view"(%1, %b, %c4, %s, %c16) {operand_segments = [1, 4]} : (tensor<?x2x2x?x16xf32>, i64, i64, i64, i64) -> tensor<?x4x?x16xf32>
  %3 = "aten.unsqueeze"(%v) {dim = 2} : (tensor<?x2x?x16xf32>) -> tensor<?x2x1x?x16xf32>
  %4 = "aten.expand"(%3, %b, %c2, %c2, %s, %c16) {operand_segments = [1, 5, 0]} : (tensor<?x2x1x?x16xf32>, i64, i64, i64, i64, i64) -> tensor<?x2x2x?x16xf32>
  %5 = "aten.view"(%4, %b, %c4, %s, %c16) {operand_segments = [1, 4]} : (tensor<?x2x2x?x16xf32>, i64, i64, i64, i64) -> tensor<?x4x?x16xf32>
  %6 = "aten.scaled_dot_product_attention"(%q, %2, %5, %mask) {scale = 0.25} : (tensor<?x4x?x16xf32>, tensor<?x4x?x16xf32>, tensor<?x4x?x16xf32>, tensor<?x1x?x?xi1>) -> tensor<?x4x?x16xf32>
  return %6 : tensor<?x4x?x16xf32>
}

// -----

// Only K is repeated (V already has the query's heads): enable_gqa would apply to both,
// so nothing changes.
// CHECK-LABEL: func.func @only_keys_repeated
// CHECK:         %[[R:.*]] = "aten.view"
// CHECK:         "aten.scaled_dot_product_attention"(%q, %[[R]], %v) {scale = 0.25} :
func.func @only_keys_repeated(%q: tensor<2x4x8x16xf32>, %k: tensor<2x2x8x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %0 = "aten.unsqueeze"(%k) {dim = 2} : (tensor<2x2x8x16xf32>) -> tensor<2x2x1x8x16xf32>
  %1 = "aten.expand"(%0) {size = [2, 2, 2, 8, 16]} : (tensor<2x2x1x8x16xf32>) -> tensor<2x2x2x8x16xf32>
  %2 = "aten.view"(%1) {size = [2, 4, 8, 16]} : (tensor<2x2x2x8x16xf32>) -> tensor<2x4x8x16xf32>
  %3 = "aten.scaled_dot_product_attention"(%q, %2, %v) {scale = 0.25} : (tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  return %3 : tensor<2x4x8x16xf32>
}

// -----

// The view does not merge the two head dims in place (it moves the repeat into the
// sequence dim): not repeat_kv, left alone.
// CHECK-LABEL: func.func @not_a_head_repeat
// CHECK:         %[[K:.*]] = "aten.view"(%{{.*}}) {size = [2, 4, 8, 16]}
// CHECK:         "aten.scaled_dot_product_attention"(%q, %[[K]], %v) {scale = 0.25} :
func.func @not_a_head_repeat(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x4x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %0 = "aten.unsqueeze"(%k) {dim = 2} : (tensor<2x4x4x16xf32>) -> tensor<2x4x1x4x16xf32>
  %1 = "aten.expand"(%0) {size = [2, 4, 2, 4, 16]} : (tensor<2x4x1x4x16xf32>) -> tensor<2x4x2x4x16xf32>
  %2 = "aten.view"(%1) {size = [2, 4, 8, 16]} : (tensor<2x4x2x4x16xf32>) -> tensor<2x4x8x16xf32>
  %3 = "aten.scaled_dot_product_attention"(%q, %2, %v) {scale = 0.25} : (tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  return %3 : tensor<2x4x8x16xf32>
}
