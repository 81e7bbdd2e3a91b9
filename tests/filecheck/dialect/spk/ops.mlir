// RUN: %roundtrip %s --split-input-file | filecheck %s

// Every spk op in its canonical form: it verifies, prints, parses back and prints the same
// (%roundtrip is spokeshave-opt --verify-roundtrip, which also runs the verifier).

// CHECK-LABEL: func.func @constants
// CHECK:         %[[N:.*]] = "spk.constant"() {value = 8} : () -> i64
// CHECK-NEXT:    %[[F:.*]] = "spk.constant"() {value = 0.5} : () -> f64
// CHECK-NEXT:    %[[B:.*]] = "spk.constant"() {value = true} : () -> i1
// CHECK-NEXT:    %[[Z:.*]] = "spk.none"() : () -> none
// CHECK-NEXT:    return %[[N]] : i64
func.func @constants() -> i64 {
  %0 = "spk.constant"() {value = 8} : () -> i64
  %1 = "spk.constant"() {value = 0.5} : () -> f64
  %2 = "spk.constant"() {value = true} : () -> i1
  %3 = "spk.none"() : () -> none
  return %0 : i64
}

// -----

// CHECK-LABEL: func.func @fused
// CHECK:         %[[G:.*]]:2 = "spk.fused"(%x, %w) ({
// CHECK-NEXT:    ^bb0(%[[A:.*]]: tensor<2x8xf32>, %[[W:.*]]: tensor<4x8xf32>):
// CHECK-NEXT:      %[[L:.*]] = "aten.linear"(%[[A]], %[[W]])
// CHECK-NEXT:      %[[R:.*]] = "aten.gelu"(%[[L]])
// CHECK-NEXT:      "spk.yield"(%[[R]], %[[L]]) : (tensor<2x4xf32>, tensor<2x4xf32>) -> ()
// CHECK-NEXT:    }) {kernel = "linear_gelu"} : (tensor<2x8xf32>, tensor<4x8xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>)
// CHECK-NEXT:    return %[[G]]#0 : tensor<2x4xf32>
func.func @fused(%x: tensor<2x8xf32>, %w: tensor<4x8xf32> {spk.param = "w"}) -> tensor<2x4xf32> {
  %0:2 = "spk.fused"(%x, %w) ({
  ^bb0(%a: tensor<2x8xf32>, %b: tensor<4x8xf32>):
    %1 = "aten.linear"(%a, %b) : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x4xf32>
    %2 = "aten.gelu"(%1) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    "spk.yield"(%2, %1) : (tensor<2x4xf32>, tensor<2x4xf32>) -> ()
  }) {kernel = "linear_gelu"} : (tensor<2x8xf32>, tensor<4x8xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>)
  return %0#0 : tensor<2x4xf32>
}

// -----

// CHECK-LABEL: func.func @per_channel
// CHECK:         %[[A:.*]] = "spk.linear_w8"(%x, %q, %s) : (tensor<?x8xf32>, tensor<4x8xi8>, tensor<4xf32>) -> tensor<?x4xf32>
// CHECK-NEXT:    %[[B:.*]] = "spk.linear_w8a8"(%x, %q, %s, %b) : (tensor<?x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
// CHECK-NEXT:    %[[C:.*]] = "spk.linear_fp8"(%x, %f, %s) : (tensor<?x8xf32>, tensor<4x8xf8E4M3FN>, tensor<4xf32>) -> tensor<?x4xf32>
// CHECK-NEXT:    %[[D:.*]] = "aten.add.Tensor"(%[[A]], %[[B]])
// CHECK-NEXT:    %[[E:.*]] = "aten.add.Tensor"(%[[D]], %[[C]])
// CHECK-NEXT:    return %[[E]]
func.func @per_channel(%x: tensor<?x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"},
                       %b: tensor<4xf32> {spk.param = "b"}, %f: tensor<4x8xf8E4M3FN> {spk.param = "f"}) -> tensor<?x4xf32> {
  %0 = "spk.linear_w8"(%x, %q, %s) : (tensor<?x8xf32>, tensor<4x8xi8>, tensor<4xf32>) -> tensor<?x4xf32>
  %1 = "spk.linear_w8a8"(%x, %q, %s, %b) : (tensor<?x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
  %2 = "spk.linear_fp8"(%x, %f, %s) : (tensor<?x8xf32>, tensor<4x8xf8E4M3FN>, tensor<4xf32>) -> tensor<?x4xf32>
  %3 = "aten.add.Tensor"(%0, %1) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  %4 = "aten.add.Tensor"(%3, %2) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  return %4 : tensor<?x4xf32>
}

// -----

// The zero points are an operand only when the grid is asymmetric; the bias is the last.
// CHECK-LABEL: func.func @w4g
// CHECK:         %[[S:.*]] = "spk.linear_w4g"(%x, %q, %s) {group = 4, symmetric = true} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:    %[[A:.*]] = "spk.linear_w4g"(%x, %q, %s, %z, %b) {group = 4, symmetric = false} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>, tensor<4x2xui8>, tensor<4xf32>) -> tensor<2x4xf32>
func.func @w4g(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x2xf32> {spk.param = "s"},
               %z: tensor<4x2xui8> {spk.param = "z"}, %b: tensor<4xf32> {spk.param = "b"}) -> tensor<2x4xf32> {
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 4, symmetric = true} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
  %1 = "spk.linear_w4g"(%x, %q, %s, %z, %b) {group = 4, symmetric = false} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>, tensor<4x2xui8>, tensor<4xf32>) -> tensor<2x4xf32>
  %2 = "aten.add.Tensor"(%0, %1) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  return %2 : tensor<2x4xf32>
}

// -----

// CHECK-LABEL: func.func @sparse24
// CHECK:         %[[Y:.*]] = "spk.linear_sparse24"(%x, %v, %m, %b) : (tensor<2x3x16xf32>, tensor<4x8xf32>, tensor<4x2xui8>, tensor<4xf32>) -> tensor<2x3x4xf32>
// CHECK-NEXT:    return %[[Y]]
func.func @sparse24(%x: tensor<2x3x16xf32>, %v: tensor<4x8xf32> {spk.param = "v"}, %m: tensor<4x2xui8> {spk.param = "m"},
                    %b: tensor<4xf32> {spk.param = "b"}) -> tensor<2x3x4xf32> {
  %0 = "spk.linear_sparse24"(%x, %v, %m, %b) : (tensor<2x3x16xf32>, tensor<4x8xf32>, tensor<4x2xui8>, tensor<4xf32>) -> tensor<2x3x4xf32>
  return %0 : tensor<2x3x4xf32>
}

// -----

// CHECK-LABEL: func.func @split
// CHECK:         %[[A:.*]] = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4x2xf32>, tensor<2xi64>) -> tensor<2x4xf32>
// CHECK-NEXT:    %[[B:.*]] = "spk.linear_w8_split"(%x, %q, %s, %ow, %oi, %b) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4x2xf32>, tensor<2xi64>, tensor<4xf32>) -> tensor<2x4xf32>
func.func @split(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"},
                 %ow: tensor<4x2xf32> {spk.param = "ow"}, %oi: tensor<2xi64> {spk.param = "oi"},
                 %b: tensor<4xf32> {spk.param = "b"}) -> tensor<2x4xf32> {
  %0 = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4x2xf32>, tensor<2xi64>) -> tensor<2x4xf32>
  %1 = "spk.linear_w8_split"(%x, %q, %s, %ow, %oi, %b) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4x2xf32>, tensor<2xi64>, tensor<4xf32>) -> tensor<2x4xf32>
  %2 = "aten.add.Tensor"(%0, %1) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  return %2 : tensor<2x4xf32>
}

// -----

// Symbolic-size arithmetic: one py op per Python function the exported graphs use.
// CHECK-LABEL: func.func @py
// CHECK:         %[[D:.*]] = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x8xf32>) -> i64
// CHECK-NEXT:    %[[T:.*]] = "spk.constant"() {value = 2} : () -> i64
// CHECK-NEXT:    %[[M:.*]] = "py.operator.mul"(%[[D]], %[[T]]) : (i64, i64) -> i64
// CHECK-NEXT:    %[[X:.*]] = "py.torch.sym_max"(%[[M]], %[[T]]) : (i64, i64) -> i64
// CHECK-NEXT:    return %[[X]] : i64
func.func @py(%x: tensor<?x8xf32>) -> i64 {
  %0 = "aten.sym_size.int"(%x) {dim = 0} : (tensor<?x8xf32>) -> i64
  %1 = "spk.constant"() {value = 2} : () -> i64
  %2 = "py.operator.mul"(%0, %1) : (i64, i64) -> i64
  %3 = "py.torch.sym_max"(%2, %1) : (i64, i64) -> i64
  return %3 : i64
}

// -----

// w8a8g: the w8a8 operands, with the activation group as an attribute.
// CHECK-LABEL: func.func @activation_groups
// CHECK:         %[[A:.*]] = "spk.linear_w8a8g"(%x, %q, %s, %b) {group = 16} : (tensor<?x32xf32>, tensor<4x32xi8>, tensor<4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
// CHECK-NEXT:    return %[[A]]
func.func @activation_groups(%x: tensor<?x32xf32>, %q: tensor<4x32xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"},
                             %b: tensor<4xf32> {spk.param = "b"}) -> tensor<?x4xf32> {
  %0 = "spk.linear_w8a8g"(%x, %q, %s, %b) {group = 16} : (tensor<?x32xf32>, tensor<4x32xi8>, tensor<4xf32>, tensor<4xf32>) -> tensor<?x4xf32>
  return %0 : tensor<?x4xf32>
}
