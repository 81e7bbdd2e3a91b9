// RUN: spokeshave-opt %s --split-input-file --emit=cpp | filecheck %s

// The CPU backend's row kernels, FileChecked beside the IR (`--emit=cpp` prints the IR,
// then each translation unit with the shared prelude elided). A fused group is one
// OpenMP-parallel loop over rows; pointwise ops share one `omp simd` loop over the row,
// their intermediates in registers; a reduction ends the loop (its passes read a stored
// row) and its elementwise tail opens the next one.

// A pointwise chain: one parallel loop nest, one simd loop, nothing stored between ops.
// CHECK-LABEL: func.func @chain(
// CHECK:       // ----- cpp: group_0.cpp
// CHECK:       extern "C" void [[SYM:spk_rows_[0-9a-f]+]](const int64_t* meta, void* const* ptrs) {
// CHECK:         #pragma omp parallel
// CHECK:         #pragma omp for schedule(static)
// CHECK:         for (int64_t r = 0; r < R; ++r) {
// CHECK:           #pragma omp simd
// CHECK-NEXT:      for (int64_t j = 0; j < C; ++j) {
// CHECK-NEXT:        const float [[A:v[0-9]+]] = (in0[j] + in1[j]);
// CHECK-NEXT:        const float [[G:v[0-9]+]] = (0.5f * [[A]] * (1.0f + spk_erf([[A]] * 0.7071067811865476f)));
// CHECK-NEXT:        const float [[T:v[0-9]+]] = spk_tanh([[G]]);
// CHECK-NEXT:        [[P:pv[0-9]+]][j] = [[T]];
// CHECK-NEXT:      }
// CHECK-NOT:       #pragma omp parallel
func.func @chain(%x: tensor<?x?x64xf32>, %y: tensor<?x?x64xf32>) -> tensor<?x?x64xf32> {
  %0 = "spk.fused"(%x, %y) ({
  ^bb0(%a: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>):
    %1 = "aten.add.Tensor"(%a, %b) : (tensor<?x?x64xf32>, tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    %2 = "aten.gelu"(%1) : (tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    %3 = "aten.tanh"(%2) : (tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    "spk.yield"(%3) : (tensor<?x?x64xf32>) -> ()
  }) {kind = "rows"} : (tensor<?x?x64xf32>, tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
  return %0 : tensor<?x?x64xf32>
}

// -----

// Residual add + LayerNorm: the sum is stored once (the norm's passes read it), mean and
// variance are row scalars, and the normalisation with weight and bias is one simd loop
// writing the output row.
// CHECK-LABEL: func.func @add_layer_norm(
// CHECK:       extern "C" void spk_rows_{{[0-9a-f]+}}(
// CHECK:         float* [[S:pv[0-9]+]] = scratch + 0 * C;
// CHECK:         [[S]][j] = [[V:v[0-9]+]];
// CHECK:         float [[M:m[0-9]+]] = 0.0f;
// CHECK:         #pragma omp simd reduction(+:[[M]])
// CHECK:         const float [[R:r[0-9]+]] = 1.0f / sqrtf(
// CHECK:         #pragma omp simd
// CHECK-NEXT:    for (int64_t j = 0; j < C; ++j) {
// CHECK-NEXT:      const float [[N:v[0-9]+]] = (((([[S]][j] - [[M]]) * [[R]]) * in2[j]) + in3[j]);
// CHECK-NEXT:      {{pv[0-9]+}}[j] = [[N]];
func.func @add_layer_norm(%x: tensor<?x384xf32>, %r: tensor<?x384xf32>, %g: tensor<384xf32> {spk.param = "g"}, %b: tensor<384xf32> {spk.param = "b"}) -> tensor<?x384xf32> {
  %0 = "spk.fused"(%x, %r, %g, %b) ({
  ^bb0(%a0: tensor<?x384xf32>, %a1: tensor<?x384xf32>, %a2: tensor<384xf32>, %a3: tensor<384xf32>):
    %1 = "aten.add.Tensor"(%a0, %a1) : (tensor<?x384xf32>, tensor<?x384xf32>) -> tensor<?x384xf32>
    %2 = "aten.layer_norm"(%1, %a2, %a3) {normalized_shape = [384], eps = 1.0e-12} : (tensor<?x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<?x384xf32>
    "spk.yield"(%2) : (tensor<?x384xf32>) -> ()
  }) {kind = "rows"} : (tensor<?x384xf32>, tensor<?x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<?x384xf32>
  return %0 : tensor<?x384xf32>
}

// -----

// Two LayerNorms of one row with their own weights (what `smooth` leaves: the residual's
// norm and the smoothed one the next GEMMs read) share its mean and 1/sigma: one pair of
// statistics passes, two normalisation loops.
// CHECK-LABEL: func.func @two_norms_of_one_row(
// CHECK:       extern "C" void spk_rows_{{[0-9a-f]+}}(
// CHECK:         float [[M:m[0-9]+]] = 0.0f;
// CHECK:         const float [[R:r[0-9]+]] = 1.0f / sqrtf(
// CHECK-NOT:     reduction(+:m
// CHECK:         const float {{v[0-9]+}} = (((({{in[0-9]+}}[j] - [[M]]) * [[R]]) * in1[j]) + in2[j]);
// CHECK-NOT:     reduction(+:m
// CHECK:         const float {{v[0-9]+}} = (((({{in[0-9]+}}[j] - [[M]]) * [[R]]) * in3[j]) + in4[j]);
func.func @two_norms_of_one_row(%x: tensor<?x384xf32>, %g: tensor<384xf32> {spk.param = "g"}, %b: tensor<384xf32> {spk.param = "b"}, %gs: tensor<384xf32> {spk.param = "gs"}, %bs: tensor<384xf32> {spk.param = "bs"}) -> (tensor<?x384xf32>, tensor<?x384xf32>) {
  %0:2 = "spk.fused"(%x, %g, %b, %gs, %bs) ({
  ^bb0(%a0: tensor<?x384xf32>, %a1: tensor<384xf32>, %a2: tensor<384xf32>, %a3: tensor<384xf32>, %a4: tensor<384xf32>):
    %1 = "aten.layer_norm"(%a0, %a1, %a2) {normalized_shape = [384], eps = 1.0e-12} : (tensor<?x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<?x384xf32>
    %2 = "aten.layer_norm"(%a0, %a3, %a4) {normalized_shape = [384], eps = 1.0e-12} : (tensor<?x384xf32>, tensor<384xf32>, tensor<384xf32>) -> tensor<?x384xf32>
    "spk.yield"(%1, %2) : (tensor<?x384xf32>, tensor<?x384xf32>) -> ()
  }) {kind = "rows"} : (tensor<?x384xf32>, tensor<384xf32>, tensor<384xf32>, tensor<384xf32>, tensor<384xf32>) -> (tensor<?x384xf32>, tensor<?x384xf32>)
  return %0#0, %0#1 : tensor<?x384xf32>, tensor<?x384xf32>
}

// -----

// Identical groups generate identical text: the second group adds no code.
// CHECK-LABEL: func.func @twice(
// CHECK:       // ----- cpp: group_0.cpp
// CHECK-NOT:   // ----- cpp: group_1.cpp
func.func @twice(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %0 = "aten.silu"(%x) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  %1 = "aten.silu"(%0) : (tensor<?x8xf32>) -> tensor<?x8xf32>
  return %1 : tensor<?x8xf32>
}

// -----

// The linear's result is read by the gelu alone. torch's GEMM runs without the bias (addmm
// would first copy it into every row of its output), which the row kernel adds as it reads
// the result, and the row kernel writes its output over that fresh buffer (one large buffer
// less per call, and no page faults for a new one): neither of the pair is `__restrict`.
// CHECK-LABEL: func.func @linear_gelu_in_place(
// CHECK:       extern "C" void spk_rows_{{[0-9a-f]+}}(
// CHECK:         const float* a0 = (const float*)ptrs[0];
// CHECK:         const float* __restrict a1 = (const float*)ptrs[1];
// CHECK:         float* out0 = (float*)ptrs[2];
// CHECK:         const float* in0 = a0 + o0;
// CHECK:         const float [[V:v[0-9]+]] = (0.5f * (in0[j] + in1[j]) * (1.0f + spk_erf((in0[j] + in1[j]) * 0.7071067811865476f)));
// CHECK-NEXT:    {{pv[0-9]+}}[j] = [[V]];
func.func @linear_gelu_in_place(%x: tensor<?x32xf32>, %w: tensor<64x32xf32>, %b: tensor<64xf32>) -> tensor<?x64xf32> {
  %0 = "spk.fused"(%x, %w, %b) ({
  ^bb0(%a: tensor<?x32xf32>, %aw: tensor<64x32xf32>, %ab: tensor<64xf32>):
    %1 = "aten.linear"(%a, %aw, %ab) : (tensor<?x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<?x64xf32>
    %2 = "aten.gelu"(%1) : (tensor<?x64xf32>) -> tensor<?x64xf32>
    "spk.yield"(%2) : (tensor<?x64xf32>) -> ()
  }) {kind = "gemm"} : (tensor<?x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<?x64xf32>
  return %0 : tensor<?x64xf32>
}

// -----

// The linear's result leaves the group too: torch adds the bias, and the row kernel writes
// a buffer of its own.
// CHECK-LABEL: func.func @linear_gelu_kept(
// CHECK:       extern "C" void spk_rows_{{[0-9a-f]+}}(
// CHECK:         const float* __restrict a0 = (const float*)ptrs[0];
// CHECK:         float* __restrict out0 = (float*)ptrs[1];
func.func @linear_gelu_kept(%x: tensor<?x32xf32>, %w: tensor<64x32xf32>, %b: tensor<64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
  %0:2 = "spk.fused"(%x, %w, %b) ({
  ^bb0(%a: tensor<?x32xf32>, %aw: tensor<64x32xf32>, %ab: tensor<64xf32>):
    %1 = "aten.linear"(%a, %aw, %ab) : (tensor<?x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<?x64xf32>
    %2 = "aten.gelu"(%1) : (tensor<?x64xf32>) -> tensor<?x64xf32>
    "spk.yield"(%1, %2) : (tensor<?x64xf32>, tensor<?x64xf32>) -> ()
  }) {kind = "gemm"} : (tensor<?x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>)
  return %0#0, %0#1 : tensor<?x64xf32>, tensor<?x64xf32>
}
