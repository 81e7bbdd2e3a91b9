// RUN: spokeshave-opt %s --split-input-file --emit=cpp --target cpu:x86_64:avx512f,avx512bw,avx512vl,avx2,fma:l1d=48K | filecheck %s --check-prefixes=CHECK,ZMM
// RUN: spokeshave-opt %s --split-input-file --emit=cpp --target cpu:x86_64:avx2,fma:l1d=32K | filecheck %s --check-prefixes=CHECK,YMM

// The CPU backend's attention kernel (`backends/cpu/attention.py`), FileChecked beside the
// IR: one OpenMP loop over (batch, head, block of query rows); per head the keys are packed
// and transposed into blocks of eight vectors' keys where they fit L1 (128 on zmm at
// D = 32; four, 64 keys, at D = 64) or four on AVX2's ymm (32 keys: its 16 registers hold
// half the chains); per key block, two query rows at a time take their
// scores in registers, a block the bool mask hides whole for both rows is skipped, masked
// scores become -inf, and an online softmax rescales the running sum and output by
// exp(old max - new max) before adding the block's weighted values; one division at the end.
// CHECK-LABEL: func.func @masked(
// CHECK:       extern "C" void [[SYM:spk_attn_[0-9a-f]+]](const int64_t* meta, void* const* ptrs) {
// ZMM:           constexpr int64_t D = 32, RB = 32, L = 16, KV = 8, KC = KV * L, PAR = 2, DS = 32;
// YMM:           constexpr int64_t D = 32, RB = 32, L = 8, KV = 4, KC = KV * L, PAR = 1, DS = 32;
// CHECK:         const float scale = ((float)0x1.6a09e667f3bcdp-3);
// CHECK:         #pragma omp parallel
// CHECK:         #pragma omp for schedule(static)
// CHECK:         kt[jb * D + d * KC + jj] = jb + jj < SK ? vp[(jb + jj) * D + d] : 0.0f;
// CHECK:         for (int64_t jb = 0; jb < SKP; jb += KC) {
// CHECK:         if (!any) continue; }
// ZMM:           const spk_v16 kv = spk_ld16(kblk + d * KC + L * c);
// YMM:           const spk_v8 kv = spk_ld8(kblk + d * KC + L * c);
// CHECK-NEXT:    a[0][c] += xa * kv;
// CHECK-NEXT:    a[1][c] += xb * kv;
// CHECK:         sr[j] = mr[j] ? sr[j] : -INFINITY;
// CHECK:         const float alpha = spk_exp(mrow[r] - mn);
// CHECK:         zrow[r] = zrow[r] * alpha + z;
// CHECK:         orr[d] *= alpha;
// CHECK:         acc[0][e][c] += pa * vv;
// CHECK:         oi[d] = orow[r * D + d] * iz;
// CHECK-NOT:     #pragma omp parallel
func.func @masked(%q: tensor<?x12x?x32xf32>, %k: tensor<?x12x?x32xf32>, %v: tensor<?x12x?x32xf32>, %m: tensor<?x1x?x?xi1>) -> tensor<?x12x?x32xf32> {
  %0 = "aten.scaled_dot_product_attention"(%q, %k, %v, %m) {scale = 0.1767766952966369} : (tensor<?x12x?x32xf32>, tensor<?x12x?x32xf32>, tensor<?x12x?x32xf32>, tensor<?x1x?x?xi1>) -> tensor<?x12x?x32xf32>
  return %0 : tensor<?x12x?x32xf32>
}

// -----

// Causal, no mask tensor, the default scale 1/sqrt(64): key blocks past the pair are
// skipped, and keys after the query row are -inf. On ymm the value pass takes the 64
// output columns in two slices of 32, so its chains stay in AVX2's 16 registers.
// CHECK-LABEL: func.func @causal(
// ZMM:         constexpr int64_t D = 64, RB = 32, L = 16, KV = 4, KC = KV * L, PAR = 2, DS = 64;
// YMM:         constexpr int64_t D = 64, RB = 32, L = 8, KV = 4, KC = KV * L, PAR = 1, DS = 32;
// CHECK:       const float scale = ((float)0x1.0000000000000p-3);
// CHECK:       if (jb > rows[1]) continue;
// CHECK:       for (int64_t j = ii + 1 - jb > 0 ? ii + 1 - jb : 0; j < jn; ++j) sr[j] = -INFINITY;
func.func @causal(%q: tensor<1x4x?x64xf32>, %k: tensor<1x4x?x64xf32>, %v: tensor<1x4x?x64xf32>) -> tensor<1x4x?x64xf32> {
  %0 = "aten.scaled_dot_product_attention"(%q, %k, %v) {is_causal = true} : (tensor<1x4x?x64xf32>, tensor<1x4x?x64xf32>, tensor<1x4x?x64xf32>) -> tensor<1x4x?x64xf32>
  return %0 : tensor<1x4x?x64xf32>
}

// -----

// Grouped-query heads read their key/value head's panels, shared by consecutive heads.
// CHECK-LABEL: func.func @gqa(
// CHECK:       extern "C" void spk_attn_
// CHECK:         const int64_t kvh = bh / REP;
// CHECK:         const float* kb = k + b * st[3] + (h / REP) * st[4];
// CHECK:         if (kvh != cur) {
func.func @gqa(%q: tensor<1x8x?x64xf32>, %k: tensor<1x2x?x64xf32>, %v: tensor<1x2x?x64xf32>) -> tensor<1x8x?x64xf32> {
  %0 = "aten.scaled_dot_product_attention"(%q, %k, %v) {enable_gqa = true} : (tensor<1x8x?x64xf32>, tensor<1x2x?x64xf32>, tensor<1x2x?x64xf32>) -> tensor<1x8x?x64xf32>
  return %0 : tensor<1x8x?x64xf32>
}
