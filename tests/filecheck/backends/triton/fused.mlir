// RUN: spokeshave-opt %s --split-input-file -p fuse --emit=triton | filecheck %s

// The Triton backend's fused groups (`fuse` forms them; `--emit=triton` prints the IR, then
// the kernel file). A GEMM's epilogue is applied to its accumulator tile before the one
// store; a run of row ops is one kernel whose row stays in registers between ops; a w8a8
// GEMM's input is quantized by the row kernel that produces it (the prologue).

// linear + gelu (a "gemm" group) is one kernel: the GELU rewrites `acc` before the store.
// CHECK-LABEL: func.func @linear_gelu(
// CHECK:       // ----- triton: kernels.py
// CHECK:       def [[K:spk_gemm_linear_[0-9a-f]+]](x_ptr, w_ptr, b_ptr, y_ptr,
// CHECK:           acc += tl.dot(x, w, input_precision="ieee")
// CHECK:             acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0)[None, :]
// CHECK-NEXT:    [[T:t[0-9]+]] = (0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476)))
// CHECK-NEXT:    acc = [[T]]
// CHECK-NEXT:    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc, mask=ym)
// CHECK-NOT:     def spk_
func.func @linear_gelu(%x: tensor<?x32xf32>, %w: tensor<64x32xf32> {spk.param = "fc.weight"}, %b: tensor<64xf32> {spk.param = "fc.bias"}) -> tensor<?x64xf32> {
  %0 = "aten.linear"(%x, %w, %b) : (tensor<?x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %1 = "aten.gelu"(%0) : (tensor<?x64xf32>) -> tensor<?x64xf32>
  return %1 : tensor<?x64xf32>
}

// -----

// A w4g GEMM + residual add + LayerNorm group: the add is the GEMM's epilogue (the
// residual tile loaded beside the accumulator); the norm, a row reduction, is one row
// kernel whose statistics are `tl.reduce`s of the loaded row.
// CHECK-LABEL: func.func @residual_layer_norm(
// CHECK:       def spk_gemm_w4g_{{[0-9a-f]+}}(x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, e0_ptr, y_ptr,
// CHECK:           acc += tl.dot(x, w, input_precision="ieee")
// CHECK:         e0 = tl.load(e0_ptr + rm[:, None] * N + rn[None, :], mask=ym, other=0.0)
// CHECK-NEXT:    [[T:t[0-9]+]] = (acc + e0)
// CHECK:       def spk_rows_{{[0-9a-f]+}}(a0, a1, a2, out0, R, C, n0, st0_0, st1_0, st2_0, BC: tl.constexpr):
// CHECK:         [[M:m[0-9]+]] = tl.reduce(tl.where(cm, in0, 0.0), 0, tl.standard._sum_combine) / C
// CHECK:         [[R:r[0-9]+]] = 1.0 / tl.sqrt(
// CHECK-NEXT:    [[V:v[0-9]+]] = ((((in0 - [[M]]) * [[R]]) * in1) + in2)
// CHECK-NEXT:    tl.store(out0 + r * C + c, [[V]], mask=cm)
// CHECK-NOT:     tl.store
func.func @residual_layer_norm(%x: tensor<?x64xf32>, %r: tensor<?x64xf32>, %q: tensor<64x32xui8> {spk.param = "q"}, %s: tensor<64x2xf32> {spk.param = "s"}, %g: tensor<64xf32> {spk.param = "ln.weight"}, %be: tensor<64xf32> {spk.param = "ln.bias"}) -> tensor<?x64xf32> {
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 32, symmetric = true} : (tensor<?x64xf32>, tensor<64x32xui8>, tensor<64x2xf32>) -> tensor<?x64xf32>
  %1 = "aten.add.Tensor"(%0, %r) : (tensor<?x64xf32>, tensor<?x64xf32>) -> tensor<?x64xf32>
  %2 = "aten.layer_norm"(%1, %g, %be) {normalized_shape = [64], eps = 1.0e-12} : (tensor<?x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  return %2 : tensor<?x64xf32>
}

// -----

// The prologue: the RMSNorm writes its rows as int8 codes and per-row scales (no float
// row), and both w8a8 GEMMs read those codes into the int32 dot.
// CHECK-LABEL: func.func @prologue(
// CHECK:       def spk_rows_{{[0-9a-f]+}}(a0, a1, q0, qs0, R, C,
// CHECK:         [[V:v[0-9]+]] = ((in0 * {{r[0-9]+}}) * in1)
// CHECK-NEXT:    qa = tl.reduce(tl.where(cm, tl.abs([[V]]), 0.0), 0, tl.standard._elementwise_max)
// CHECK-NEXT:    qs = tl.where(qa > {{.*}}, tl.div_rn(qa, 127.0), 1.0)
// CHECK-NEXT:    qv = (tl.div_rn([[V]], qs) + 12582912.0) - 12582912.0
// CHECK:         tl.store(q0 + r * C + c, qv.to(tl.int8), mask=cm)
// CHECK-NEXT:    tl.store(qs0 + r, qs)
// CHECK:       def spk_gemm_w8a8_{{[0-9a-f]+}}(x_ptr, q_ptr, s_ptr, xs_ptr, b_ptr, y_ptr,
// CHECK:           x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=xm, other=0)
// CHECK-NEXT:      w = tl.load(q_ptr
// CHECK-NEXT:      acc += tl.dot(x, w, out_dtype=tl.int32)
// CHECK-NOT:     def spk_
func.func @prologue(%x: tensor<?x64xf32>, %g: tensor<64xf32> {spk.param = "ln.weight"}, %wq: tensor<64x64xi8> {spk.param = "q.qweight"}, %sq: tensor<64xf32> {spk.param = "q.scale"}, %wk: tensor<64x64xi8> {spk.param = "k.qweight"}, %sk: tensor<64xf32> {spk.param = "k.scale"}) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %0 = "aten.rms_norm"(%x, %g) {normalized_shape = [64], eps = 1.0e-6} : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  %1 = "spk.linear_w8a8"(%0, %wq, %sq) : (tensor<?x64xf32>, tensor<64x64xi8>, tensor<64xf32>) -> tensor<?x64xf32>
  %2 = "spk.linear_w8a8"(%0, %wk, %sk) : (tensor<?x64xf32>, tensor<64x64xi8>, tensor<64xf32>) -> tensor<?x64xf32>
  return %1, %2 : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// Attention scores: scale, mask add and softmax are one row kernel over a 4-d row space;
// the mask broadcasts by run-time strides (0 in the head and query dims).
// CHECK-LABEL: func.func @softmax(
// CHECK:       def spk_rows_{{[0-9a-f]+}}(a0, a1, out0, R, C, n0, n1, n2, st0_0, st0_1, st0_2, st1_0, st1_1, st1_2, BC: tl.constexpr):
// CHECK:         [[S:v[0-9]+]] = (in0 * 0.125)
// CHECK-NEXT:    [[A:v[0-9]+]] = ([[S]] + in1)
// CHECK-NEXT:    [[MX:mx[0-9]+]] = tl.reduce(tl.where(cm, [[A]], float('-inf')), 0, tl.standard._elementwise_max)
// CHECK-NEXT:    [[E:e[0-9]+]] = tl.where(cm, tl.exp([[A]] - [[MX]]), 0.0)
// CHECK-NEXT:    [[Z:z[0-9]+]] = 1.0 / tl.reduce([[E]], 0, tl.standard._sum_combine)
// CHECK-NEXT:    [[V:v[0-9]+]] = ([[E]] * [[Z]])
// CHECK-NEXT:    tl.store(out0 + r * C + c, [[V]], mask=cm)
// CHECK-NOT:     def spk_
func.func @softmax(%x: tensor<?x4x?x?xf32>, %m: tensor<?x1x1x?xf32>) -> tensor<?x4x?x?xf32> {
  %0 = "aten.mul.Scalar"(%x) {other = 0.125} : (tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
  %1 = "aten.add.Tensor"(%0, %m) : (tensor<?x4x?x?xf32>, tensor<?x1x1x?xf32>) -> tensor<?x4x?x?xf32>
  %2 = "aten.softmax.int"(%1) {dim = -1} : (tensor<?x4x?x?xf32>) -> tensor<?x4x?x?xf32>
  return %2 : tensor<?x4x?x?xf32>
}

// -----

// A bf16 model stays bf16: the row kernel loads into float32 and stores its own type; the
// GEMM takes x into `tl.dot` as it is, with the decoded weight tile cast to it (tensor
// cores), except under the interpreter (DOT_F32: it multiplies bf16 as uint16 storage).
// CHECK-LABEL: func.func @bf16_norm_linear_gelu(
// CHECK:       def spk_rows_{{[0-9a-f]+}}(
// CHECK:         in0 = tl.load(a0 + o0 + c, mask=cm, other=1.0).to(tl.float32)
// CHECK:         tl.store(out0 + r * C + c, {{v[0-9]+}}.to(out0.dtype.element_ty), mask=cm)
// CHECK:       def spk_gemm_linear_{{[0-9a-f]+}}(x_ptr, w_ptr, b_ptr, y_ptr, ws_ptr, lock_ptr, M, N, K, stride_xm, stride_ym,
// CHECK-NEXT:          HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr,
// CHECK:           x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=xm, other=0.0)
// CHECK-NEXT:      w = tl.load(w_ptr
// CHECK-NEXT:      w = w.to(x.dtype)
// CHECK-NEXT:      if DOT_F32:
// CHECK-NEXT:          acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
// CHECK-NEXT:      else:
// CHECK-NEXT:          acc += tl.dot(x, w)
// CHECK:         tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty), mask=ym)
func.func @bf16_norm_linear_gelu(%x: tensor<?x32xbf16>, %w: tensor<64x32xbf16> {spk.param = "fc.weight"}, %g: tensor<32xbf16> {spk.param = "ln.weight"}) -> tensor<?x64xbf16> {
  %0 = "aten.rms_norm"(%x, %g) {normalized_shape = [32], eps = 1.0e-6} : (tensor<?x32xbf16>, tensor<32xbf16>) -> tensor<?x32xbf16>
  %1 = "aten.linear"(%0, %w) : (tensor<?x32xbf16>, tensor<64x32xbf16>) -> tensor<?x64xbf16>
  %2 = "aten.gelu"(%1) : (tensor<?x64xbf16>) -> tensor<?x64xbf16>
  return %2 : tensor<?x64xbf16>
}
