// RUN: spokeshave-opt %s --split-input-file --emit=triton | filecheck %s

// The Triton backend's compressed GEMMs (`--emit=triton` prints the IR, then the kernel
// file). Each is one `@triton.jit` function: the stored weight is decoded tile by tile in
// registers and fed to `tl.dot` (one per K step; w4g's two nibble halves one each); no float
// copy of the weight is written anywhere (the only stores are the output tile and, under
// split-K, the partial accumulators).

// w4g, in the backend's halves layout: one [16, BN] byte load per 32-row block of K, its
// low and high nibbles two dense code tiles (no interleave), each minus its group's zero and
// times its group's scale, and a dot each.
// CHECK-LABEL: func.func @w4g(
// CHECK:       // ----- triton: kernels.py
// CHECK:       def spk_gemm_w4g_{{[0-9a-f]+}}(x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, y_ptr, ws_ptr, lock_ptr, M, N, K, stride_xm, stride_ym,
// CHECK:         for k0 in range(k_lo, k_hi, BK):
// CHECK-NEXT:        for b in tl.static_range(BK // 32):
// CHECK:               byte = tl.load(q_ptr + (kb // 2 + tl.arange(0, 16))[:, None] * N + rn[None, :],
// CHECK:               lo = (byte & 0xF).to(tl.float32)
// CHECK-NEXT:          hi = (byte >> 4).to(tl.float32)
// CHECK:               gl = (kb // GROUP) * N + rn[None, :]
// CHECK:               wl = (lo - zl) * tl.load(s_ptr + gl, mask=ml, other=0.0)
// CHECK-NEXT:          wh = (hi - zh) * tl.load(s_ptr + gh, mask=mh, other=0.0)
// CHECK-NEXT:          x = tl.load(x_ptr + rm[:, None] * stride_xm + kl[None, :], mask=(rm[:, None] < M) & (kl[None, :] < K), other=0.0).to(tl.float32)
// CHECK-NEXT:          w = wl
// CHECK-NEXT:          acc += tl.dot(x, w, input_precision="ieee")
// CHECK-NEXT:          x = tl.load(x_ptr + rm[:, None] * stride_xm + kh[None, :], mask=(rm[:, None] < M) & (kh[None, :] < K), other=0.0).to(tl.float32)
// CHECK-NEXT:          w = wh
// CHECK-NEXT:          acc += tl.dot(x, w, input_precision="ieee")
// CHECK-NOT:       tl.dot
// CHECK:         tl.store(y_ptr
// CHECK-NOT:     tl.store
func.func @w4g(%x: tensor<?x64xf32>, %q: tensor<32x32xui8> {spk.param = "q"}, %s: tensor<32x2xf32> {spk.param = "s"}, %z: tensor<32x2xui8> {spk.param = "z"}) -> tensor<?x32xf32> {
  %0 = "spk.linear_w4g"(%x, %q, %s, %z) {group = 32, symmetric = false} : (tensor<?x64xf32>, tensor<32x32xui8>, tensor<32x2xf32>, tensor<32x2xui8>) -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// w8a8: int8 x int8 into an int32 accumulator, then the per-token and per-channel scales.
// Split-K (a constexpr): each program sums its slice of K, stores its int32 partial tile
// and counts in; the last one sums the partials in slice order and resets the counter, and
// the scales come after the sum.
// CHECK-LABEL: func.func @w8a8(
// CHECK:       def spk_gemm_w8a8_{{[0-9a-f]+}}(x_ptr, q_ptr, s_ptr, xs_ptr, b_ptr, y_ptr, ws_ptr, lock_ptr,
// CHECK:         acc = tl.full((BM, BN), 0, dtype=tl.int32)
// CHECK-NEXT:    if SPLIT_K > 1:
// CHECK-NEXT:        k_per = (K + BK * SPLIT_K - 1) // (BK * SPLIT_K) * BK
// CHECK:         for k0 in range(k_lo, k_hi, BK):
// CHECK:             acc += tl.dot(x, w, out_dtype=tl.int32)
// CHECK:         if SPLIT_K > 1:
// CHECK-NEXT:        part = ws_ptr + (tl.program_id(2) * M + rm[:, None]) * N + rn[None, :]
// CHECK-NEXT:        tl.store(part, acc, mask=ym)
// CHECK:             arrived = tl.atomic_add(tile, 1)
// CHECK:             acc = tl.full((BM, BN), 0, dtype=tl.int32)
// CHECK-NEXT:        for s in range(SPLIT_K):
// CHECK:             tl.atomic_xchg(tile, 0, mask=arrived == SPLIT_K - 1)
// CHECK-NEXT:    acc = acc.to(tl.float32) * tl.load(xs_ptr + rm, mask=rm < M, other=0.0)[:, None]
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
