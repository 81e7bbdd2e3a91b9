// RUN: spokeshave-opt %s --split-input-file --emit=triton | filecheck %s

// The Triton backend's compressed GEMMs (`--emit=triton` prints the IR, then the kernel
// file). Each is one `@triton.jit` function: the stored weight is decoded tile by tile in
// registers and fed to one `tl.dot`; no float copy of the weight is written anywhere (the
// only store is the output tile).

// w4g: the nibble of byte k // 2, minus its group's zero, times its group's scale.
// CHECK-LABEL: func.func @w4g(
// CHECK:       // ----- triton: kernels.py
// CHECK:       def spk_gemm_w4g_{{[0-9a-f]+}}(x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, stride_xm, stride_ym,
// CHECK:         for k0 in range(0, K, BK):
// CHECK:           byte = tl.load(q_ptr + rn[None, :] * (K // 2) + rk[:, None] // 2, mask=wm, other=0)
// CHECK-NEXT:      code = ((byte >> ((rk[:, None] % 2) * 4)) & 0xF).to(tl.float32)
// CHECK:           w = (code - z) * s
// CHECK-NEXT:      acc += tl.dot(x, w, input_precision="ieee")
// CHECK-NOT:       tl.dot
// CHECK:         tl.store(y_ptr
// CHECK-NOT:     tl.store
func.func @w4g(%x: tensor<?x64xf32>, %q: tensor<32x32xui8> {spk.param = "q"}, %s: tensor<32x2xf32> {spk.param = "s"}, %z: tensor<32x2xui8> {spk.param = "z"}) -> tensor<?x32xf32> {
  %0 = "spk.linear_w4g"(%x, %q, %s, %z) {group = 32, symmetric = false} : (tensor<?x64xf32>, tensor<32x32xui8>, tensor<32x2xf32>, tensor<32x2xui8>) -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// w8a8: int8 x int8 into an int32 accumulator, then the per-token and per-channel scales.
// CHECK-LABEL: func.func @w8a8(
// CHECK:       def spk_gemm_w8a8_{{[0-9a-f]+}}(x_ptr, q_ptr, s_ptr, xs_ptr, b_ptr, y_ptr,
// CHECK:         acc = tl.full((BM, BN), 0, dtype=tl.int32)
// CHECK:           acc += tl.dot(x, w, out_dtype=tl.int32)
// CHECK:         acc = acc.to(tl.float32) * tl.load(xs_ptr + rm, mask=rm < M, other=0.0)[:, None]
// CHECK-NEXT:    acc = acc * tl.load(s_ptr + rn, mask=rn < N, other=0.0)[None, :]
func.func @w8a8(%x: tensor<?x64xf32>, %q: tensor<32x64xi8> {spk.param = "q"}, %s: tensor<32xf32> {spk.param = "s"}) -> tensor<?x32xf32> {
  %0 = "spk.linear_w8a8"(%x, %q, %s) : (tensor<?x64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// 2:4: load the kept values and their 2-bit positions, expand in registers, dense dot.
// CHECK-LABEL: func.func @sparse24(
// CHECK:       def spk_gemm_sparse24_{{[0-9a-f]+}}(x_ptr, v_ptr, m_ptr, b_ptr, y_ptr,
// CHECK:           nib = (tl.load(m_ptr + rn[None, :] * MCOLS + grp // 2, mask=wm, other=0).to(tl.int32)
// CHECK:           w = tl.where(pos == (nib & 3), v0, tl.where(pos == ((nib >> 2) & 3), v1, 0.0))
// CHECK-NEXT:      acc += tl.dot(x, w, input_precision="ieee")
func.func @sparse24(%x: tensor<?x64xf32>, %v: tensor<32x32xf32> {spk.param = "v"}, %m: tensor<32x8xui8> {spk.param = "m"}, %b: tensor<32xf32> {spk.param = "b"}) -> tensor<?x32xf32> {
  %0 = "spk.linear_sparse24"(%x, %v, %m, %b) : (tensor<?x64xf32>, tensor<32x32xf32>, tensor<32x8xui8>, tensor<32xf32>) -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// fp8: e4m3 decoded by bit arithmetic; the exponent's power of two is built as float bits.
// CHECK-LABEL: func.func @fp8(
// CHECK:       def spk_gemm_fp8_{{[0-9a-f]+}}(
// CHECK:           p = ((e + 120) << 23).to(tl.float32, bitcast=True)
// CHECK:           acc += tl.dot(x, w, input_precision="ieee")
func.func @fp8(%x: tensor<?x64xf32>, %q: tensor<32x64xf8E4M3FN> {spk.param = "q"}, %s: tensor<32xf32> {spk.param = "s"}) -> tensor<?x32xf32> {
  %0 = "spk.linear_fp8"(%x, %q, %s) : (tensor<?x64xf32>, tensor<32x64xf8E4M3FN>, tensor<32xf32>) -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// LLM.int8() split: the int8 GEMM (x arrives with its outlier columns zeroed), its
// scales, then the outlier columns' float GEMM in 16-wide masked tiles, then the bias.
// CHECK-LABEL: func.func @w8a8_split(
// CHECK:       def spk_gemm_w8a8_split_{{[0-9a-f]+}}(x_ptr, q_ptr, s_ptr, xs_ptr, xo_ptr, ow_ptr, MO, b_ptr, y_ptr,
// CHECK:           acc += tl.dot(x, w, out_dtype=tl.int32)
// CHECK:         acc = acc * tl.load(s_ptr + rn, mask=rn < N, other=0.0)[None, :]
// CHECK-NEXT:    for o0 in range(0, MO, 16):
// CHECK:             acc += tl.dot(xo, ow, input_precision="ieee")
// CHECK-NEXT:    if HAS_BIAS:
func.func @w8a8_split(%x: tensor<?x64xf32>, %q: tensor<32x64xi8> {spk.param = "q"}, %s: tensor<32xf32> {spk.param = "s"}, %ow: tensor<32x3xf32> {spk.param = "ow"}, %oi: tensor<3xi64> {spk.param = "oi"}) -> tensor<?x32xf32> {
  %0 = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi) : (tensor<?x64xf32>, tensor<32x64xi8>, tensor<32xf32>, tensor<32x3xf32>, tensor<3xi64>) -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}
