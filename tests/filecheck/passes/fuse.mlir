// RUN: spokeshave-opt %s --split-input-file -p fuse | filecheck %s
// RUN: spokeshave-opt %s --split-input-file -p fuse --verify-diagnostics >/dev/null
// RUN: spokeshave-opt %s --split-input-file -p "fuse{kinds=rows}" | filecheck %s --check-prefix=ROWS
// RUN: spokeshave-opt %s --split-input-file -p "fuse{kinds=prologue|attention}" | filecheck %s --check-prefix=PA
// RUN: spokeshave-opt %s --split-input-file -p "quantize{scheme=w8a8},fuse" 2>/dev/null | filecheck %s --check-prefix=W8A8
// RUN: spokeshave-opt %s --split-input-file -p "quantize{scheme=w8a8},lorc{rank=2},fuse" 2>/dev/null | filecheck %s --check-prefix=LORC
// RUN: spokeshave-opt %s --split-input-file -p fuse > %t.once 2>/dev/null
// RUN: spokeshave-opt %s --split-input-file -p fuse,fuse > %t.twice 2>/dev/null
// RUN: diff %t.once %t.twice
// RUN: not spokeshave-opt %s --split-input-file -p "fuse,quantize{scheme=w8}" 2>&1 | filecheck %s --check-prefix=ORDER
// RUN: not spokeshave-opt %s -p "fuse{kinds=rows|loops}" 2>&1 | filecheck %s --check-prefix=BAD-KINDS

// BAD-KINDS: error: pass 'fuse': option 'kinds' takes '|'-separated group kinds from rows, gemm, prologue, attention; got 'rows|loops'
// Compression passes rewrite ops that fusion moves into regions: after `fuse` they refuse.
// ORDER: error: pass 'quantize' must run before 'fuse'

// Running `fuse` twice is a fixed point (the `diff` above): ops inside a `spk.fused` are
// not grouped again, and what stayed outside stays outside for the same reasons.

// A GEMM epilogue: the gelu joins the linear's group (kind "gemm"), after it in the region.
// CHECK-LABEL: func.func @linear_gelu(
// CHECK:         %[[G:.+]] = "spk.fused"(%x, %w, %b) ({
// CHECK-NEXT:    ^bb0(%[[X:.+]]: tensor<4x32xf32>, %[[W:.+]]: tensor<64x32xf32>, %[[B:.+]]: tensor<64xf32>):
// CHECK-NEXT:      %[[L:.+]] = "aten.linear"(%[[X]], %[[W]], %[[B]])
// CHECK-NEXT:      %[[R:.+]] = "aten.gelu"(%[[L]])
// CHECK-NEXT:      "spk.yield"(%[[R]]) : (tensor<4x64xf32>) -> ()
// CHECK-NEXT:    }) {kind = "gemm"} : (tensor<4x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<4x64xf32>
// CHECK-NEXT:    return %[[G]] : tensor<4x64xf32>
// `kinds` restricts the groups formed: no gemm groups, nothing here.
// ROWS-LABEL: func.func @linear_gelu(
// ROWS-NOT:     spk.fused
// ROWS:         return
// PA-LABEL:   func.func @linear_gelu(
// PA-NOT:       spk.fused
// PA:           return
func.func @linear_gelu(%x: tensor<4x32xf32>, %w: tensor<64x32xf32> {spk.param = "fc.weight"}, %b: tensor<64xf32> {spk.param = "fc.bias"}) -> tensor<4x64xf32> {
  %0 = "aten.linear"(%x, %w, %b) : (tensor<4x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<4x64xf32>
  %1 = "aten.gelu"(%0) : (tensor<4x64xf32>) -> tensor<4x64xf32>
  return %1 : tensor<4x64xf32>
}

// -----

// Diamonds through ops that never fuse (a permute, an ATen op without a record): fusing
// the relu and the add would make a cycle relu -> add -> permute -> relu in the quotient
// graph, so neither pair is contracted and a remark says which op is in the way.
// CHECK-LABEL: func.func @diamond(
// CHECK-NOT:     spk.fused
// CHECK:         %[[R:.+]] = "aten.relu"(%x)
// CHECK-NEXT:    %[[P:.+]] = "aten.permute"(%[[R]])
// CHECK-NEXT:    %[[A:.+]] = "aten.add.Tensor"(%[[R]], %[[P]])
// CHECK-NEXT:    %[[C:.+]] = "aten.cumsum"(%[[A]])
// CHECK-NEXT:    %[[M:.+]] = "aten.mul.Tensor"(%[[A]], %[[C]])
// CHECK-NEXT:    return %[[M]]
func.func @diamond(%x: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %0 = "aten.relu"(%x) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %1 = "aten.permute"(%0) {dims = [1, 0]} : (tensor<4x4xf32>) -> tensor<4x4xf32>
  // expected-remark@+1 {{fuse: aten.add.Tensor not fused with the group of aten.relu: the path through aten.permute would make a cycle}}
  %2 = "aten.add.Tensor"(%0, %1) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %3 = "aten.cumsum"(%2) {dim = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32>
  // expected-remark@+1 {{fuse: aten.mul.Tensor not fused with the group of aten.add.Tensor: the path through aten.cumsum would make a cycle}}
  %4 = "aten.mul.Tensor"(%2, %3) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %4 : tensor<4x4xf32>
}

// -----

// A value read outside the group (the linear's result, also returned) is a result of the
// fused op; a value read only inside (the gelu's) is not.
// CHECK-LABEL: func.func @outside_use(
// CHECK:         %[[G:.+]]:2 = "spk.fused"(%x, %w) ({
// CHECK-NEXT:    ^bb0(
// CHECK-NEXT:      %[[L:.+]] = "aten.linear"
// CHECK-NEXT:      %[[E:.+]] = "aten.gelu"(%[[L]])
// CHECK-NEXT:      %[[M:.+]] = "aten.mul.Tensor"(%[[E]], %[[L]])
// CHECK-NEXT:      "spk.yield"(%[[L]], %[[M]])
// CHECK-NEXT:    }) {kind = "gemm"}
// CHECK-NEXT:    return %[[G]]#1, %[[G]]#0
func.func @outside_use(%x: tensor<4x32xf32>, %w: tensor<64x32xf32> {spk.param = "fc.weight"}) -> (tensor<4x64xf32>, tensor<4x64xf32>) {
  %0 = "aten.linear"(%x, %w) : (tensor<4x32xf32>, tensor<64x32xf32>) -> tensor<4x64xf32>
  %1 = "aten.gelu"(%0) {approximate = "tanh"} : (tensor<4x64xf32>) -> tensor<4x64xf32>
  %2 = "aten.mul.Tensor"(%1, %0) : (tensor<4x64xf32>, tensor<4x64xf32>) -> tensor<4x64xf32>
  return %2, %0 : tensor<4x64xf32>, tensor<4x64xf32>
}

// -----

// A GEMM prologue: the LayerNorm whose output Q, K and V read as w8a8 linears quantizes it
// once, so the three linears join its group (kind "prologue"), after it. The normalised
// value is also read outside (the residual add) and stays a result; a float linear reading
// it does not join (its GEMM reads floats), nor does the add (it reads the linears' results).
// Dynamic (`?`) token counts.
// CHECK-LABEL: func.func @qkv(
// CHECK:         %[[G:.+]]:4 = "spk.fused"(%x, %g, %be, %wq, %sq, %bq, %wk, %sk, %wv, %sv) ({
// CHECK-NEXT:    ^bb0(%[[X:[^:]+]]: tensor<?x64xf32>,
// CHECK-NEXT:      %[[N:.+]] = "aten.layer_norm"(%[[X]],
// CHECK-NEXT:      %[[Q:.+]] = "spk.linear_w8a8"(%[[N]],
// CHECK-NEXT:      %[[K:.+]] = "spk.linear_w8a8"(%[[N]],
// CHECK-NEXT:      %[[V:.+]] = "spk.linear_w8a8"(%[[N]],
// CHECK-NEXT:      "spk.yield"(%[[N]], %[[Q]], %[[K]], %[[V]]) : (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) -> ()
// CHECK-NEXT:    }) {kind = "prologue"}
// CHECK-NEXT:    %[[QV:.+]] = "aten.view"(%[[G]]#1)
// CHECK-NEXT:    %[[F:.+]] = "aten.linear"(%[[G]]#0, %wf)
// CHECK-NEXT:    %[[S:.+]] = "aten.add.Tensor"(%[[G]]#3, %[[G]]#0)
// CHECK-NEXT:    return %[[QV]], %[[G]]#2, %[[S]], %[[F]]
// ROWS-LABEL: func.func @qkv(
// ROWS-NOT:     spk.fused
// ROWS:         return
// PA-LABEL:   func.func @qkv(
// PA:           = "spk.fused"
// PA:           }) {kind = "prologue"}
func.func @qkv(%x: tensor<?x64xf32>, %g: tensor<64xf32> {spk.param = "ln.weight"}, %be: tensor<64xf32> {spk.param = "ln.bias"},
               %wq: tensor<64x64xi8> {spk.param = "q.qweight"}, %sq: tensor<64xf32> {spk.param = "q.scale"}, %bq: tensor<64xf32> {spk.param = "q.bias"},
               %wk: tensor<64x64xi8> {spk.param = "k.qweight"}, %sk: tensor<64xf32> {spk.param = "k.scale"},
               %wv: tensor<64x64xi8> {spk.param = "v.qweight"}, %sv: tensor<64xf32> {spk.param = "v.scale"},
               %wf: tensor<16x64xf32> {spk.param = "f.weight"}) -> (tensor<?x4x16xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x16xf32>) {
  %0 = "aten.layer_norm"(%x, %g, %be) {normalized_shape = [64], eps = 1.0e-12} : (tensor<?x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %1 = "spk.linear_w8a8"(%0, %wq, %sq, %bq) : (tensor<?x64xf32>, tensor<64x64xi8>, tensor<64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %2 = "aten.view"(%1) {size = [-1, 4, 16]} : (tensor<?x64xf32>) -> tensor<?x4x16xf32>
  %3 = "spk.linear_w8a8"(%0, %wk, %sk) : (tensor<?x64xf32>, tensor<64x64xi8>, tensor<64xf32>) -> tensor<?x64xf32>
  %4 = "spk.linear_w8a8"(%0, %wv, %sv) : (tensor<?x64xf32>, tensor<64x64xi8>, tensor<64xf32>) -> tensor<?x64xf32>
  %5 = "aten.linear"(%0, %wf) : (tensor<?x64xf32>, tensor<16x64xf32>) -> tensor<?x16xf32>
  %6 = "aten.add.Tensor"(%4, %0) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  return %2, %3, %6, %5 : tensor<?x4x16xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x16xf32>
}

// -----

// Post-LN BERT: the output dense, the residual add and the LayerNorm are one GEMM group.
// CHECK-LABEL: func.func @post_ln(
// CHECK:         %[[G:.+]] = "spk.fused"(%x, %w, %b, %h, %g, %be) ({
// CHECK-NEXT:    ^bb0(%[[X:[^:]+]]: tensor<2x8x64xf32>, %[[W:[^:]+]]: tensor<64x64xf32>, %[[B:[^:]+]]: tensor<64xf32>, %[[H:[^:]+]]: tensor<2x8x64xf32>, %[[LG:[^:]+]]: tensor<64xf32>, %[[LB:[^:]+]]: tensor<64xf32>):
// CHECK-NEXT:      %[[L:.+]] = "aten.linear"(%[[X]], %[[W]], %[[B]])
// CHECK-NEXT:      %[[A:.+]] = "aten.add.Tensor"(%[[L]], %[[H]])
// CHECK-NEXT:      %[[N:.+]] = "aten.layer_norm"(%[[A]], %[[LG]], %[[LB]])
// CHECK-NEXT:      "spk.yield"(%[[N]])
// CHECK-NEXT:    }) {kind = "gemm"}
// CHECK-NEXT:    return %[[G]]
func.func @post_ln(%x: tensor<2x8x64xf32>, %h: tensor<2x8x64xf32>, %w: tensor<64x64xf32> {spk.param = "dense.weight"}, %b: tensor<64xf32> {spk.param = "dense.bias"},
                   %g: tensor<64xf32> {spk.param = "ln.weight"}, %be: tensor<64xf32> {spk.param = "ln.bias"}) -> tensor<2x8x64xf32> {
  %0 = "aten.linear"(%x, %w, %b) : (tensor<2x8x64xf32>, tensor<64x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %1 = "aten.add.Tensor"(%0, %h) : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %2 = "aten.layer_norm"(%1, %g, %be) {normalized_shape = [64], eps = 1.0e-12} : (tensor<2x8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  return %2 : tensor<2x8x64xf32>
}

// -----

// A softmax over the last dim with its pointwise producers (scale, mask) is a rows group;
// the [2, 1, 1, 8] mask broadcasts into the [2, 4, 8, 8] row space.
// CHECK-LABEL: func.func @softmax(
// CHECK:         %[[G:.+]] = "spk.fused"(%s, %m) ({
// CHECK-NEXT:    ^bb0(%[[S:[^:]+]]: tensor<2x4x8x8xf32>, %[[M:[^:]+]]: tensor<2x1x1x8xf32>):
// CHECK-NEXT:      %[[A:.+]] = "aten.mul.Tensor"(%[[S]]) {other = 0.25}
// CHECK-NEXT:      %[[B:.+]] = "aten.add.Tensor"(%[[A]], %[[M]])
// CHECK-NEXT:      %[[C:.+]] = "aten.softmax.int"(%[[B]]) {dim = -1}
// CHECK-NEXT:      "spk.yield"(%[[C]])
// CHECK-NEXT:    }) {kind = "rows"}
// CHECK-NEXT:    return %[[G]]
// ROWS-LABEL: func.func @softmax(
// ROWS:         "spk.fused"
// ROWS:         }) {kind = "rows"}
// PA-LABEL:   func.func @softmax(
// PA-NOT:       spk.fused
// PA:           return
func.func @softmax(%s: tensor<2x4x8x8xf32>, %m: tensor<2x1x1x8xf32>) -> tensor<2x4x8x8xf32> {
  %0 = "aten.mul.Tensor"(%s) {other = 0.25} : (tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  %1 = "aten.add.Tensor"(%0, %m) : (tensor<2x4x8x8xf32>, tensor<2x1x1x8xf32>) -> tensor<2x4x8x8xf32>
  %2 = "aten.softmax.int"(%1) {dim = -1} : (tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  return %2 : tensor<2x4x8x8xf32>
}

// -----

// Attention is a group of its own (one op); a pointwise consumer does not join it.
// CHECK-LABEL: func.func @attention(
// CHECK:         %[[G:.+]] = "spk.fused"(%q, %k, %v) ({
// CHECK-NEXT:    ^bb0(%[[Q:[^:]+]]: tensor<2x4x8x16xf32>, %[[K:[^:]+]]: tensor<2x4x8x16xf32>, %[[V:[^:]+]]: tensor<2x4x8x16xf32>):
// CHECK-NEXT:      %[[A:.+]] = "aten.scaled_dot_product_attention"(%[[Q]], %[[K]], %[[V]]) {is_causal = true}
// CHECK-NEXT:      "spk.yield"(%[[A]])
// CHECK-NEXT:    }) {kind = "attention"}
// CHECK-NEXT:    %[[R:.+]] = "aten.relu"(%[[G]])
// CHECK-NEXT:    return %[[R]]
// ROWS-LABEL: func.func @attention(
// ROWS-NOT:     spk.fused
// ROWS:         return
// PA-LABEL:   func.func @attention(
// PA:           }) {kind = "attention"}
func.func @attention(%q: tensor<2x4x8x16xf32>, %k: tensor<2x4x8x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %0 = "aten.scaled_dot_product_attention"(%q, %k, %v) {is_causal = true} : (tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  %1 = "aten.relu"(%0) : (tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  return %1 : tensor<2x4x8x16xf32>
}

// -----

// `lorc`'s correction (two thin linears on the same input, added to the result) joins the
// compressed linear's group whole, and the relu after it is the epilogue.
// CHECK-LABEL: func.func @lorc(
// CHECK:         %[[G:.+]] = "spk.fused"(%x, %q, %s, %b, %lb, %la) ({
// CHECK-NEXT:    ^bb0(%[[X:[^:]+]]: tensor<4x32xf32>, %[[Q:[^:]+]]: tensor<64x32xi8>, %[[S:[^:]+]]: tensor<64xf32>, %[[B:[^:]+]]: tensor<64xf32>, %[[LB:[^:]+]]: tensor<2x32xf32>, %[[LA:[^:]+]]: tensor<64x2xf32>):
// CHECK-NEXT:      %[[Y:.+]] = "spk.linear_w8"(%[[X]], %[[Q]], %[[S]], %[[B]])
// CHECK-NEXT:      %[[T:.+]] = "aten.linear"(%[[X]], %[[LB]])
// CHECK-NEXT:      %[[C:.+]] = "aten.linear"(%[[T]], %[[LA]])
// CHECK-NEXT:      %[[A:.+]] = "aten.add.Tensor"(%[[Y]], %[[C]])
// CHECK-NEXT:      %[[R:.+]] = "aten.relu"(%[[A]])
// CHECK-NEXT:      "spk.yield"(%[[R]])
// CHECK-NEXT:    }) {kind = "gemm"}
// CHECK-NEXT:    return %[[G]]
func.func @lorc(%x: tensor<4x32xf32>, %q: tensor<64x32xi8> {spk.param = "up.qweight"}, %s: tensor<64xf32> {spk.param = "up.scale"}, %b: tensor<64xf32> {spk.param = "up.bias"},
                %lb: tensor<2x32xf32> {spk.param = "up.lorc_b"}, %la: tensor<64x2xf32> {spk.param = "up.lorc_a"}) -> tensor<4x64xf32> {
  %0 = "spk.linear_w8"(%x, %q, %s, %b) : (tensor<4x32xf32>, tensor<64x32xi8>, tensor<64xf32>, tensor<64xf32>) -> tensor<4x64xf32>
  %1 = "aten.linear"(%x, %lb) : (tensor<4x32xf32>, tensor<2x32xf32>) -> tensor<4x2xf32>
  %2 = "aten.linear"(%1, %la) : (tensor<4x2xf32>, tensor<64x2xf32>) -> tensor<4x64xf32>
  %3 = "aten.add.Tensor"(%0, %2) : (tensor<4x64xf32>, tensor<4x64xf32>) -> tensor<4x64xf32>
  %4 = "aten.relu"(%3) : (tensor<4x64xf32>) -> tensor<4x64xf32>
  return %4 : tensor<4x64xf32>
}

// -----

// A float pre-LN block: LayerNorm, then Q and K. Alone, `fuse` finds nothing to merge (a
// float GEMM reads its input as it is). After `quantize{scheme=w8a8}` the LayerNorm is the
// w8a8 linears' prologue; after `lorc` too, each linear carries its correction, so each is
// a GEMM group with it and the LayerNorm stays apart.
// CHECK-LABEL: func.func @pre_ln(
// CHECK-NOT:     spk.fused
// CHECK:         return
// W8A8-LABEL:  func.func @pre_ln(
// W8A8:          %[[G:.+]]:2 = "spk.fused"(%x, %g, %be, %q.qweight, %q.scale, %k.qweight, %k.scale) ({
// W8A8:            "aten.layer_norm"
// W8A8-NEXT:       "spk.linear_w8a8"
// W8A8-NEXT:       "spk.linear_w8a8"
// W8A8-NEXT:       "spk.yield"
// W8A8-NEXT:     }) {kind = "prologue"}
// W8A8-NEXT:     return %[[G]]#0, %[[G]]#1
// LORC-LABEL:  func.func @pre_ln(
// LORC:          %[[N:.+]] = "aten.layer_norm"(%x
// LORC-NEXT:     %[[Q:.+]] = "spk.fused"(%[[N]], %q.qweight, %q.scale, %q.lorc_b, %q.lorc_a) ({
// LORC:            "spk.linear_w8a8"
// LORC-NEXT:       "aten.linear"
// LORC-NEXT:       "aten.linear"
// LORC-NEXT:       "aten.add.Tensor"
// LORC-NEXT:       "spk.yield"
// LORC-NEXT:     }) {kind = "gemm"}
// LORC-NEXT:     %[[K:.+]] = "spk.fused"(%[[N]], %k.qweight, %k.scale, %k.lorc_b, %k.lorc_a) ({
// LORC:          }) {kind = "gemm"}
// LORC-NEXT:     return %[[Q]], %[[K]]
func.func @pre_ln(%x: tensor<8x64xf32>, %g: tensor<64xf32> {spk.param = "ln.weight"}, %be: tensor<64xf32> {spk.param = "ln.bias"},
                  %wq: tensor<64x64xf32> {spk.param = "q.weight"}, %wk: tensor<32x64xf32> {spk.param = "k.weight"}) -> (tensor<8x64xf32>, tensor<8x32xf32>) {
  %0 = "aten.layer_norm"(%x, %g, %be) {normalized_shape = [64], eps = 1.0e-05} : (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %1 = "aten.linear"(%0, %wq) : (tensor<8x64xf32>, tensor<64x64xf32>) -> tensor<8x64xf32>
  %2 = "aten.linear"(%0, %wk) : (tensor<8x64xf32>, tensor<32x64xf32>) -> tensor<8x32xf32>
  return %1, %2 : tensor<8x64xf32>, tensor<8x32xf32>
}

// -----

// Dynamic dims: the epilogue's keepdim mean over the last dim reads full rows of the
// linear's [?, ?, 128] result and its [?, ?, 1] result broadcasts back into them.
// CHECK-LABEL: func.func @dynamic(
// CHECK:         %[[G:.+]] = "spk.fused"(%x, %w) ({
// CHECK-NEXT:    ^bb0(%[[X:[^:]+]]: tensor<?x?x64xf32>, %[[W:[^:]+]]: tensor<128x64xf32>):
// CHECK-NEXT:      %[[L:.+]] = "aten.linear"(%[[X]], %[[W]]) : (tensor<?x?x64xf32>, tensor<128x64xf32>) -> tensor<?x?x128xf32>
// CHECK-NEXT:      %[[M:.+]] = "aten.mean.dim"(%[[L]]) {dim = [-1], keepdim = true} : (tensor<?x?x128xf32>) -> tensor<?x?x1xf32>
// CHECK-NEXT:      %[[D:.+]] = "aten.sub.Tensor"(%[[L]], %[[M]])
// CHECK-NEXT:      %[[S:.+]] = "aten.silu"(%[[D]])
// CHECK-NEXT:      "spk.yield"(%[[S]]) : (tensor<?x?x128xf32>) -> ()
// CHECK-NEXT:    }) {kind = "gemm"} : (tensor<?x?x64xf32>, tensor<128x64xf32>) -> tensor<?x?x128xf32>
// CHECK-NEXT:    return %[[G]]
func.func @dynamic(%x: tensor<?x?x64xf32>, %w: tensor<128x64xf32> {spk.param = "fc.weight"}) -> tensor<?x?x128xf32> {
  %0 = "aten.linear"(%x, %w) : (tensor<?x?x64xf32>, tensor<128x64xf32>) -> tensor<?x?x128xf32>
  %1 = "aten.mean.dim"(%0) {dim = [-1], keepdim = true} : (tensor<?x?x128xf32>) -> tensor<?x?x1xf32>
  %2 = "aten.sub.Tensor"(%0, %1) : (tensor<?x?x128xf32>, tensor<?x?x1xf32>) -> tensor<?x?x128xf32>
  %3 = "aten.silu"(%2) : (tensor<?x?x128xf32>) -> tensor<?x?x128xf32>
  return %3 : tensor<?x?x128xf32>
}

// -----

// Not one row space: a mean over dim 0 is no last-dim reduction (never grouped), and a
// [4, 8] softmax broadcast into a [3, 4, 8] add would be recomputed for each of the 3.
// CHECK-LABEL: func.func @not_rows(
// CHECK-NOT:     spk.fused
// CHECK:         return
func.func @not_rows(%x: tensor<4x8xf32>, %z: tensor<3x4x8xf32>) -> (tensor<1x8xf32>, tensor<3x4x8xf32>) {
  %0 = "aten.relu"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %1 = "aten.mean.dim"(%0) {dim = [0], keepdim = true} : (tensor<4x8xf32>) -> tensor<1x8xf32>
  %2 = "aten.softmax.int"(%x) {dim = -1} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %3 = "aten.add.Tensor"(%2, %z) : (tensor<4x8xf32>, tensor<3x4x8xf32>) -> tensor<3x4x8xf32>
  return %1, %3 : tensor<1x8xf32>, tensor<3x4x8xf32>
}
