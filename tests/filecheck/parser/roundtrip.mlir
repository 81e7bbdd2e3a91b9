// RUN: %roundtrip %s --split-input-file | filecheck %s

// Parser tests. %roundtrip prints each case, parses the printed text and prints it again;
// it fails with a diff unless the second print equals the first (print(parse(t)) == t on
// the printer's own output). The checks show the canonical form: results renumbered
// %0, %1... in order, `module {}` and `loc(...)` dropped (without --print-debuginfo),
// typed integer attributes normalised, custom `func.return` printed as `return`.

// CHECK-LABEL: func.func @attributes
// CHECK:         %[[M:.*]]:2 = "aten.max.dim"(%arg0) {dim = -1, keepdim, "quoted key" = 1, f = 0.0015, inf = 0x7FF0000000000000 : f64, nan = 0x7FF8000000000000 : f64, big = 1.0e+300, neg = -2.5, t = 3, b = true, x = 2.0, s = "a\"b\\c\0A\E2\82\AC", l = [1, [2, 3], "s", f16], dt = bf16, e = []} : (tensor<2x?x8xf32>) -> (tensor<2x?x8xf32>, tensor<2x?xi64>)
// CHECK-NEXT:    return %[[M]]#0, %[[M]]#1 : tensor<2x?x8xf32>, tensor<2x?xi64>
// CHECK-NEXT:  }
// CHECK-NOT:     loc(
module attributes {torch.debug = "x"} {
  func.func @attributes(%arg0: tensor<2x?x8xf32>) -> (tensor<2x?x8xf32>, tensor<2x?xi64>) {
    %values, %indices = "aten.max.dim"(%arg0) {dim = -1, keepdim, "quoted key" = 1, f = 1.5e-3, inf = 0x7FF0000000000000 : f64, nan = 0x7FF8000000000000 : f64, big = 1e300, neg = -2.5, t = 3 : i64, b = 1 : i1, x = 2 : f32, s = "a\"b\\c\n\E2\82\AC", l = [1, [2, 3], "s", f16], dt = bf16, e = []} : (tensor<2x?x8xf32>) -> (tensor<2x?x8xf32>, tensor<2x?xi64>) loc("model.py":12:5)
    func.return %values, %indices : tensor<2x?x8xf32>, tensor<2x?xi64>
  } loc("model.py":1:1)
} loc(unknown)

// -----

// Element and scalar types: 0-d tensors, complex, fp8, symbolic sizes (i64), float and
// bool scalars, and `none` (an absent optional tensor in a list).

// CHECK-LABEL: func.func @types
// CHECK:         %x: tensor<f32>,
// CHECK-NEXT:    %c: tensor<4xcomplex<f32>>,
// CHECK-NEXT:    %f8: tensor<4xf8E4M3FN>,
// CHECK-NEXT:    %h: tensor<2x?x?xbf16>,
// CHECK-NEXT:    %s: i64,
// CHECK-NEXT:    %d: f64,
// CHECK-NEXT:    %p: i1) -> (tensor<f32>, i64, f64, i1, none) {
// CHECK-NEXT:    %[[N:.*]] = "spk.none"() : () -> none
// CHECK-NEXT:    return %x, %s, %d, %p, %[[N]] : tensor<f32>, i64, f64, i1, none
func.func @types(%x: tensor<f32>, %c: tensor<4xcomplex<f32>>, %f8: tensor<4xf8E4M3FN>, %h: tensor<2x?x?xbf16>, %s: i64, %d: f64, %p: i1) -> (tensor<f32>, i64, f64, i1, none) {
  %none = "spk.none"() : () -> none
  return %x, %s, %d, %p, %none : tensor<f32>, i64, f64, i1, none
}

// -----

// Parameters keep their spk.param attribute; a signature over 120 characters is printed
// one argument per line.

// CHECK-LABEL: func.func @params(
// CHECK-NEXT:    %x: tensor<8x128x384xf32>,
// CHECK-NEXT:    %w: tensor<1536x384xf32> {spk.param = "l0.ffn.up.weight"},
// CHECK-NEXT:    %b: tensor<1536xf32> {spk.param = "l0.ffn.up.bias"}) -> tensor<8x128x1536xf32> {
// CHECK-NEXT:    %[[L:.*]] = "aten.linear"(%x, %w, %b) : (tensor<8x128x384xf32>, tensor<1536x384xf32>, tensor<1536xf32>) -> tensor<8x128x1536xf32>
// CHECK-NEXT:    %[[G:.*]] = "aten.gelu"(%[[L]]) {approximate = "none"} : (tensor<8x128x1536xf32>) -> tensor<8x128x1536xf32>
// CHECK-NEXT:    return %[[G]] : tensor<8x128x1536xf32>
func.func @params(%x: tensor<8x128x384xf32>,
                  %w: tensor<1536x384xf32> {spk.param = "l0.ffn.up.weight"},
                  %b: tensor<1536xf32> {spk.param = "l0.ffn.up.bias"}) -> tensor<8x128x1536xf32> {
  %0 = "aten.linear"(%x, %w, %b) : (tensor<8x128x384xf32>, tensor<1536x384xf32>, tensor<1536xf32>) -> tensor<8x128x1536xf32>
  %1 = "aten.gelu"(%0) {approximate = "none"} : (tensor<8x128x1536xf32>) -> tensor<8x128x1536xf32>
  return %1 : tensor<8x128x1536xf32>
}

// -----

// A fused group: an op with one region whose block ends in spk.yield. Values inside are
// numbered in the function's namespace; the group's block argument keeps its name.

// CHECK-LABEL: func.func @fused
// CHECK:         %[[F:.*]]:2 = "spk.fused"(%x, %y) ({
// CHECK-NEXT:    ^bb0(%a: tensor<4xf32>, %b: tensor<4xf32>):
// CHECK-NEXT:      %[[S:.*]] = "aten.add.Tensor"(%a, %b) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:      %[[R:.*]] = "aten.relu"(%[[S]]) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:      "spk.yield"(%[[S]], %[[R]]) : (tensor<4xf32>, tensor<4xf32>) -> ()
// CHECK-NEXT:    }) {kernel = "add_relu"} : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
// CHECK-NEXT:    return %[[F]]#1 : tensor<4xf32>
func.func @fused(%x: tensor<4xf32>, %y: tensor<4xf32>) -> tensor<4xf32> {
  %group:2 = "spk.fused"(%x, %y) ({
  ^bb0(%a: tensor<4xf32>, %b: tensor<4xf32>):
    %sum = "aten.add.Tensor"(%a, %b) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %act = "aten.relu"(%sum) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%sum, %act) : (tensor<4xf32>, tensor<4xf32>) -> ()
  }) {kernel = "add_relu"} : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
  return %group#1 : tensor<4xf32>
}

// -----

// Several functions in one module, no arguments, no results, ops without results,
// comments anywhere; argument names that are not valid bare identifiers are renamed.

// CHECK-LABEL: func.func @no_results() {
// CHECK-NEXT:    "aten._assert_async.msg"() {assert_msg = "ok"} : () -> ()
// CHECK-NEXT:    return
// CHECK-NEXT:  }
// CHECK-LABEL: func.func @numeric_arg_name
// CHECK-SAME:    (%[[A:.*]]: tensor<4xf32>) -> tensor<4xf32> {
// CHECK-NEXT:    %[[N:.*]] = "aten.neg"(%[[A]]) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    return %[[N]] : tensor<4xf32>
func.func @no_results() {
  // a comment inside a body
  "aten._assert_async.msg"() {assert_msg = "ok"} : () -> ()   // and a trailing one
  return
}
func.func @numeric_arg_name(%0: tensor<4xf32>) -> tensor<4xf32> {
  %1 = "aten.neg"(%0) : (tensor<4xf32>) -> tensor<4xf32>
  return %1 : tensor<4xf32>
}
