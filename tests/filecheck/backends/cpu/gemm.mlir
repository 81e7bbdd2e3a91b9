// RUN: spokeshave-opt %s --split-input-file --emit=cpp --target cpu:x86_64:avx2,fma,f16c | filecheck %s --check-prefix=AVX2
// RUN: spokeshave-opt %s --split-input-file --emit=cpp --target cpu:x86_64:avx512f,avx512bw,avx512vl,avx512_vnni,avx2,fma,f16c | filecheck %s --check-prefix=VNNI
// RUN: spokeshave-opt %s --split-input-file --emit=cpp --target cpu:x86_64:avx512f,avx512bw,avx512vl,avx512_vnni,avx2,fma,f16c,amx_tile,amx_int8 | filecheck %s --check-prefix=AMX

// The CPU backend's compressed GEMM kernels (`backends/cpu/gemm.py`), FileChecked beside
// the IR for a target given as text, so the ISA path is fixed whatever the host.

// A w8a8g prologue: the RMSNorm's row kernel writes each row as the GEMM's record (codes,
// then group scales and zero points) through the kernel's own quantizer; the GEMM entry
// reads the records, running the int8 micro-kernel once per activation group of 32 and
// adding each group's exact partial sum into float accumulators. AVX2 multiplies with
// vpmaddubsw; AVX-512 VNNI with vpdpbusd; AMX with tdpbusd on the zmm family's records,
// keeping its zmm kernel as the fallback.
// AVX2-LABEL: func.func @rms_norm_w8a8g(
// AVX2:       _mm256_maddubs_epi16
// AVX2:       #ifndef SPK_GEMM_I8Y_G
// AVX2:       static inline void micro_groups(
// AVX2:         for (int64_t g = 0; g < NG; ++g) {
// AVX2-NEXT:      v8si acc[R][NR];
// AVX2:           acc[i][j] = Dp<VNNI>::dot(acc[i][j], va, b[j], bp[j]);
// AVX2:       static void gemm_qg(
// AVX2:         micro_groups<VNNI, R, K, G, NPAD, PW>(xq + m0 * RB,
// AVX2:       // spk.linear_w8a8g, N=32, K=64, activation group 32, isa avx2; quantized rows are 80 bytes
// AVX2:       extern "C" void spk_rows_{{[0-9a-f]+}}(
// AVX2:         const int64_t qb0 = 80;
// AVX2:         spk_gemm_w8a8g32_avx2_n32_k64_quantize_row({{pv[0-9]+}}, (uint8_t*)qo0 + r * qb0, qs0 + r);
// AVX2:       extern "C" void spk_gemm_{{[0-9a-f]+}}(
// AVX2:         spk_gemm_w8a8g32_avx2_n32_k64_q((const void*)ptrs[3],
// VNNI-LABEL: func.func @rms_norm_w8a8g(
// VNNI:       _mm512_dpbusd_epi32
// VNNI:       static inline void micro_groups(
// VNNI:         for (int64_t g = 0; g < NG; ++g) {
// VNNI-NEXT:      v16si acc[R][NR];
// VNNI:           acc[i][j] = Dp<VNNI>::dot(acc[i][j], va, b[j], bp[j]);
// VNNI:           const __m512 a = exact_sub_mul(_mm512_cvtepi32_ps((__m512i)acc[i][j]), zc, c[j]);
// VNNI:       static void gemm_qg(
// VNNI:       spk_gemm_w8a8g32_avx512_vnni_n32_k64_quantize_row(
// VNNI:       spk_gemm_w8a8g32_avx512_vnni_n32_k64_q((const void*)ptrs[3],
// AMX-LABEL: func.func @rms_norm_w8a8g(
// AMX:       static inline bool amx_ready() {
// AMX:       static inline void amx_issue(
// AMX:         _tile_dpbusd(0, 4, 5);
// AMX:       static void gemm_qg_amx(
// AMX:         gemm_qg<true, N, K, G>(xq, M, y, ldy, w, bias, epi);
// AMX:         amx_configure<KS>();
// AMX:       spk_gemm_w8a8g32_amx_n32_k64_quantize_row(
// AMX:       spk_gemm_w8a8g32_amx_n32_k64_q((const void*)ptrs[3],
func.func @rms_norm_w8a8g(%x: tensor<?x64xf32>, %g: tensor<64xf32> {spk.param = "g"}, %q: tensor<32x64xi8> {spk.param = "q"}, %s: tensor<32xf32> {spk.param = "s"}) -> tensor<?x32xf32> {
  %0 = "spk.fused"(%x, %g, %q, %s) ({
  ^bb0(%a: tensor<?x64xf32>, %ag: tensor<64xf32>, %aq: tensor<32x64xi8>, %as: tensor<32xf32>):
    %1 = "aten.rms_norm"(%a, %ag) {normalized_shape = [64], eps = 1.0e-05} : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
    %2 = "spk.linear_w8a8g"(%1, %aq, %as) {group = 32} : (tensor<?x64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<?x32xf32>
    "spk.yield"(%2) : (tensor<?x32xf32>) -> ()
  }) {kind = "prologue"} : (tensor<?x64xf32>, tensor<64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<?x32xf32>
  return %0 : tensor<?x32xf32>
}

// -----

// A w8a8 and a w8a8g linear read one norm output: their row records differ, so the norm
// writes floats and each GEMM quantizes for itself (its float entry).
// AVX2-LABEL: func.func @two_row_formats(
// AVX2:       extern "C" void spk_rows_{{[0-9a-f]+}}(
// AVX2-NOT:     _quantize_row(
// AVX2:       extern "C" void spk_gemm_{{[0-9a-f]+}}(
// AVX2:         spk_gemm_w8a8_avx2_n32_k64(x, M, 64,
// AVX2:       extern "C" void spk_gemm_{{[0-9a-f]+}}(
// AVX2:         spk_gemm_w8a8g32_avx2_n32_k64(x, M, 64,
// VNNI-LABEL: func.func @two_row_formats(
// AMX-LABEL: func.func @two_row_formats(
// AMX:         spk_gemm_w8a8_amx_n32_k64(x, M, 64,
// AMX:         spk_gemm_w8a8g32_amx_n32_k64(x, M, 64,
func.func @two_row_formats(%x: tensor<?x64xf32>, %g: tensor<64xf32> {spk.param = "g"}, %q: tensor<32x64xi8> {spk.param = "q"}, %s: tensor<32xf32> {spk.param = "s"}) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
  %0:2 = "spk.fused"(%x, %g, %q, %s) ({
  ^bb0(%a: tensor<?x64xf32>, %ag: tensor<64xf32>, %aq: tensor<32x64xi8>, %as: tensor<32xf32>):
    %1 = "aten.rms_norm"(%a, %ag) {normalized_shape = [64], eps = 1.0e-05} : (tensor<?x64xf32>, tensor<64xf32>) -> tensor<?x64xf32>
    %2 = "spk.linear_w8a8"(%1, %aq, %as) : (tensor<?x64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<?x32xf32>
    %3 = "spk.linear_w8a8g"(%1, %aq, %as) {group = 32} : (tensor<?x64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> tensor<?x32xf32>
    "spk.yield"(%2, %3) : (tensor<?x32xf32>, tensor<?x32xf32>) -> ()
  }) {kind = "prologue"} : (tensor<?x64xf32>, tensor<64xf32>, tensor<32x64xi8>, tensor<32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>)
  return %0#0, %0#1 : tensor<?x32xf32>, tensor<?x32xf32>
}
