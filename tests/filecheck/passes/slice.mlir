// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline=fold-norms,slice 2>&1 | filecheck %s
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="slice{fraction=1.0}" 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="slice{fraction=-0.1}" 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="fold-norms,slice{fraction=0.25}" --calibration=synthetic:4 2>/dev/null | filecheck %s --check-prefix=SLICE
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="fold-norms,slice{fraction=0}" --calibration=synthetic:4 2>/dev/null | filecheck %s --check-prefix=ZERO
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="fold-norms,slice{fraction=0.25}" --calibration=synthetic:4 2>&1 >/dev/null | filecheck %s --check-prefix=REMARK

// `slice` computes its PCA rotations from calibration data: `--calibration=synthetic:4`
// gives it seeded batches, so the rewrite is checked here structurally (its numerics, the
// invariance at fraction 0 and the error growing with the fraction, from Python in
// tests/test_slicegpt.py). Then what it refuses, and why. A fraction outside [0, 1) is
// refused before any input is read.

// RANGE: error: pass 'slice': option 'fraction' must be in [0, 1) (the share of the embedding dimension to delete)

// A pre-LN block (embedding, RMSNorm, two linears, residual add, final norm, head). Without
// calibration: refused. With it, at fraction 0.25 the stream 8 -> 6 channels: the embedding
// loses columns, the block's output linear loses rows, the input linear and the head lose
// columns, a 6x6 shortcut rotation sits on the residual path, and the norms keep the
// width-8 divisor through eps' = eps * 8/6. fold-norms first moved the norm scales into the
// linears (`.folded`).

// CHECK: error: pass 'slice' needs calibration data: pass calibration=[batches] to spokeshave.compile

// SLICE-LABEL: func.func @pre_ln(
// SLICE-NEXT:    %ids: tensor<2x4xi64>,
// SLICE-NEXT:    %[[E:[^:]+]]: tensor<16x6xf32> {spk.param = "emb.sliced"},
// SLICE-NEXT:    %[[Q:[^:]+]]: tensor<8x6xf32> {spk.param = "q.weight.folded.sliced"},
// SLICE-NEXT:    %[[O:[^:]+]]: tensor<6x8xf32> {spk.param = "o.weight.sliced"},
// SLICE-NEXT:    %[[S:[^:]+]]: tensor<6x6xf32> {spk.param = "slice.shortcut.0"},
// SLICE-NEXT:    %[[H:[^:]+]]: tensor<16x6xf32> {spk.param = "head.weight.folded.sliced"}) -> tensor<2x4x16xf32> {
// SLICE-NEXT:    %[[H0:.+]] = "aten.embedding"(%[[E]], %ids) : (tensor<16x6xf32>, tensor<2x4xi64>) -> tensor<2x4x6xf32>
// SLICE-NEXT:    %[[N0:.+]] = "aten.rms_norm"(%[[H0]]) {normalized_shape = [6], eps = 1.3333333333333332e-06}
// SLICE-NEXT:    %[[U:.+]] = "aten.linear"(%[[N0]], %[[Q]]) : (tensor<2x4x6xf32>, tensor<8x6xf32>) -> tensor<2x4x8xf32>
// SLICE-NEXT:    %[[A:.+]] = "aten.silu"(%[[U]])
// SLICE-NEXT:    %[[D:.+]] = "aten.linear"(%[[A]], %[[O]]) : (tensor<2x4x8xf32>, tensor<6x8xf32>) -> tensor<2x4x6xf32>
// SLICE-NEXT:    %[[R:.+]] = "aten.linear"(%[[H0]], %[[S]]) : (tensor<2x4x6xf32>, tensor<6x6xf32>) -> tensor<2x4x6xf32>
// SLICE-NEXT:    %[[H1:.+]] = "aten.add.Tensor"(%[[R]], %[[D]]) : (tensor<2x4x6xf32>, tensor<2x4x6xf32>) -> tensor<2x4x6xf32>
// SLICE-NEXT:    %[[N1:.+]] = "aten.rms_norm"(%[[H1]]) {normalized_shape = [6], eps = 1.3333333333333332e-06}
// SLICE-NEXT:    %[[Y:.+]] = "aten.linear"(%[[N1]], %[[H]]) : (tensor<2x4x6xf32>, tensor<16x6xf32>) -> tensor<2x4x16xf32>
// SLICE-NEXT:    return %[[Y]] : tensor<2x4x16xf32>
// REMARK: slice.mlir:[[# @LINE + 10]]:1: remark: slice: residual stream 8 -> 6 channels; parameters 384 -> 324

// Fraction 0 deletes nothing: the same rewrite with full-width rotations, eps unchanged.
// ZERO-LABEL: func.func @pre_ln(
// ZERO:          %{{.+}}: tensor<16x8xf32> {spk.param = "emb.sliced"},
// ZERO:          %{{.+}}: tensor<8x8xf32> {spk.param = "slice.shortcut.0"},
// ZERO:          "aten.rms_norm"(%{{.+}}) {normalized_shape = [8], eps = 1.0e-06}
// ZERO-NOT:      tensor<2x4x6xf32>
// ZERO:          return

func.func @pre_ln(%ids: tensor<2x4xi64>, %emb: tensor<16x8xf32> {spk.param = "emb"},
                                    %g0: tensor<8xf32> {spk.param = "ln0.weight"},
                                    %wq: tensor<8x8xf32> {spk.param = "q.weight"},
                                    %wo: tensor<8x8xf32> {spk.param = "o.weight"},
                                    %g1: tensor<8xf32> {spk.param = "norm.weight"},
                                    %wh: tensor<16x8xf32> {spk.param = "head.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
  %1 = "aten.rms_norm"(%0, %g0) {normalized_shape = [8], eps = 1.0e-06} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.linear"(%1, %wq) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %3 = "aten.silu"(%2) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %4 = "aten.linear"(%3, %wo) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %5 = "aten.add.Tensor"(%0, %4) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %6 = "aten.rms_norm"(%5, %g1) {normalized_shape = [8], eps = 1.0e-06} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %7 = "aten.linear"(%6, %wh) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %7 : tensor<2x4x16xf32>
}

// -----

// Post-LN (BERT): the residual stream passes through a LayerNorm after every block.

// CHECK: error: pass 'slice': cannot slice this model: the residual stream passes through the normalisation "aten.layer_norm"
// CHECK-SAME: (a post-LN model, like BERT)
// CHECK-SAME: SliceGPT's invariance needs a pre-LN model whose residual stream is read only through normalisations
func.func @bert_post_ln(%x: tensor<2x4x8xf32>, %g0: tensor<8xf32> {spk.param = "ln0.weight"},
                        %b0: tensor<8xf32> {spk.param = "ln0.bias"},
                        %w: tensor<8x8xf32> {spk.param = "dense.weight"},
                        %b: tensor<8xf32> {spk.param = "dense.bias"},
                        %g1: tensor<8xf32> {spk.param = "ln1.weight"},
                        %b1: tensor<8xf32> {spk.param = "ln1.bias"}) -> tensor<2x4x8xf32> {
  %0 = "aten.layer_norm"(%x, %g0, %b0) {normalized_shape = [8], eps = 1.0e-12} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w, %b) : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.add.Tensor"(%1, %0) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %3 = "aten.layer_norm"(%2, %g1, %b1) {normalized_shape = [8], eps = 1.0e-12} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %4 = "aten.linear"(%3, %w) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  return %4 : tensor<2x4x8xf32>
}

// -----

// The residual stream is read by something that is not a normalisation (a gelu straight
// off the stream): it would see the rotated basis.

// CHECK: error: pass 'slice': cannot slice this model: the residual stream value 0 is read by "aten.gelu"
// CHECK-SAME: which is not a normalisation over its last dim
func.func @stream_read_raw(%ids: tensor<2x4xi64>, %emb: tensor<16x8xf32> {spk.param = "emb"},
                           %wo: tensor<8x8xf32> {spk.param = "o.weight"},
                           %wh: tensor<16x8xf32> {spk.param = "head.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
  %1 = "aten.gelu"(%0) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.linear"(%1, %wo) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %3 = "aten.add.Tensor"(%0, %2) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %4 = "aten.rms_norm"(%3) {normalized_shape = [8], eps = 1.0e-06} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %5 = "aten.linear"(%4, %wh) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %5 : tensor<2x4x16xf32>
}

// -----

// A LayerNorm whose bias feeds something other than linears (here: the output) keeps its
// bias, so fold-norms cannot turn it into an RMSNorm, and slice asks for it.

// CHECK: error: pass 'slice': the residual stream is read by "aten.layer_norm"
// CHECK-SAME: a LayerNorm: it subtracts the mean (a fixed direction of the stream), so it does not commute with a rotation; run fold-norms first
func.func @layer_norm_left(%ids: tensor<2x4xi64>, %emb: tensor<16x8xf32> {spk.param = "emb"},
                           %wo: tensor<8x8xf32> {spk.param = "o.weight"},
                           %g: tensor<8xf32> {spk.param = "ln_f.weight"},
                           %b: tensor<8xf32> {spk.param = "ln_f.bias"}) -> tensor<2x4x8xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
  %1 = "aten.layer_norm"(%0) {normalized_shape = [8]} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.linear"(%1, %wo) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %3 = "aten.add.Tensor"(%0, %2) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %4 = "aten.layer_norm"(%3, %g, %b) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  return %4 : tensor<2x4x8xf32>
}
