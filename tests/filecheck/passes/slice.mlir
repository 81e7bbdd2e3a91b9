// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline=fold-norms,slice 2>&1 | filecheck %s
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="slice{fraction=1.0}" 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="slice{fraction=-0.1}" 2>&1 | filecheck %s --check-prefix=RANGE

// `slice` computes its PCA rotations from calibration data, which spokeshave-opt has none
// of; its structural rewrite is tested from Python (tests/test_slicegpt.py). Here: what it
// refuses, and why. A fraction outside [0, 1) is refused before any input is read.

// RANGE: error: pass 'slice': option 'fraction' must be in [0, 1) (the share of the embedding dimension to delete)

// A pre-LN model that fold-norms has prepared: the only thing missing is calibration.

// CHECK: error: pass 'slice' needs calibration data: pass calibration=[batches] to spokeshave.compile
func.func @pre_ln_needs_calibration(%ids: tensor<2x4xi64>, %emb: tensor<16x8xf32> {spk.param = "emb"},
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
