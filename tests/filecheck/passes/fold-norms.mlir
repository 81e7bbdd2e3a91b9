// RUN: spokeshave-opt %s --split-input-file --pass-pipeline=fold-norms | filecheck %s

// HF LlamaRMSNorm, as torch.export writes it (pow/mean/add/rsqrt/mul, then `weight *`),
// becomes one scale-free aten.rms_norm; its weight moves into the linear that reads it. An
// aten.rms_norm with a weight (the final norm) folds into the head the same way.

// CHECK-LABEL: func.func @llama_rms_norm
// CHECK-NOT:     spk.param = "ln0.weight"
// CHECK-NOT:     spk.param = "norm.weight"
// CHECK-NOT:     spk.param = "q.weight"}
// CHECK-NOT:     spk.param = "head.weight"}
// CHECK:         %[[E:.*]] = "aten.embedding"(%emb, %ids)
// CHECK-NOT:     "aten.pow.Tensor_Scalar"
// CHECK-NOT:     "aten.rsqrt"
// CHECK:         %[[N0:.*]] = "aten.rms_norm"(%[[E]]) {normalized_shape = [8], eps = 1.0e-06} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:    %[[Q:.*]] = "aten.linear"(%[[N0]], %q.weight.folded)
// CHECK-NEXT:    %[[A:.*]] = "aten.silu"(%[[Q]])
// CHECK-NEXT:    %[[O:.*]] = "aten.linear"(%[[A]], %wo)
// CHECK-NEXT:    %[[H:.*]] = "aten.add.Tensor"(%[[E]], %[[O]])
// CHECK-NEXT:    %[[N1:.*]] = "aten.rms_norm"(%[[H]]) {normalized_shape = [8], eps = 1.0e-06}
// CHECK-NEXT:    %[[L:.*]] = "aten.linear"(%[[N1]], %head.weight.folded)
// CHECK-NEXT:    return %[[L]]
func.func @llama_rms_norm(%ids: tensor<2x4xi64>, %emb: tensor<16x8xf32> {spk.param = "emb"},
                          %g0: tensor<8xf32> {spk.param = "ln0.weight"},
                          %wq: tensor<8x8xf32> {spk.param = "q.weight"},
                          %wo: tensor<8x8xf32> {spk.param = "o.weight"},
                          %g1: tensor<8xf32> {spk.param = "norm.weight"},
                          %wh: tensor<16x8xf32> {spk.param = "head.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
  %1 = "aten.pow.Tensor_Scalar"(%0) {exponent = 2} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.mean.dim"(%1) {dim = [-1], keepdim = true} : (tensor<2x4x8xf32>) -> tensor<2x4x1xf32>
  %3 = "aten.add.Tensor"(%2) {other = 1.0e-06} : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %4 = "aten.rsqrt"(%3) : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %5 = "aten.mul.Tensor"(%0, %4) : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  %6 = "aten.mul.Tensor"(%g0, %5) : (tensor<8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %7 = "aten.linear"(%6, %wq) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %8 = "aten.silu"(%7) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %9 = "aten.linear"(%8, %wo) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %10 = "aten.add.Tensor"(%0, %9) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %11 = "aten.rms_norm"(%10, %g1) {normalized_shape = [8], eps = 1.0e-06} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %12 = "aten.linear"(%11, %wh) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %12 : tensor<2x4x16xf32>
}

// -----

// GPT-2 style: Conv1D (view -> addmm -> view) becomes aten.linear with the transposed
// weight; each LayerNorm's weight and bias fold into the linear that reads it (the head
// gains a bias); the writes into the residual stream (embedding, output projection) are
// centred, so the stream is mean-free and every LayerNorm becomes an RMSNorm (same eps).

// CHECK-LABEL: func.func @gpt2_layer_norm
// CHECK-NOT:     spk.param = "ln_1.weight"
// CHECK-NOT:     spk.param = "fc.weight"}
// CHECK-NOT:     spk.param = "wte"}
// CHECK-NOT:     "aten.addmm"
// CHECK-NOT:     "aten.layer_norm"
// CHECK:         %[[E:.*]] = "aten.embedding"(%wte.centred, %ids)
// CHECK-NEXT:    %[[N0:.*]] = "aten.rms_norm"(%[[E]]) {normalized_shape = [8], eps = 1.0e-05}
// CHECK-NEXT:    %[[FC:.*]] = "aten.linear"(%[[N0]], %fc.weight.t.folded, %fc.bias.folded) : (tensor<2x4x8xf32>, tensor<32x8xf32>, tensor<32xf32>) -> tensor<2x4x32xf32>
// CHECK-NEXT:    %[[G:.*]] = "aten.gelu"(%[[FC]])
// CHECK-NEXT:    %[[P:.*]] = "aten.linear"(%[[G]], %proj.weight.t.centred, %proj.bias.centred) : (tensor<2x4x32xf32>, tensor<8x32xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:    %[[H:.*]] = "aten.add.Tensor"(%[[E]], %[[P]])
// CHECK-NEXT:    %[[N1:.*]] = "aten.rms_norm"(%[[H]]) {normalized_shape = [8], eps = 1.0e-05}
// CHECK-NEXT:    %[[L:.*]] = "aten.linear"(%[[N1]], %head.weight.folded, %head.bias.folded)
// CHECK-NEXT:    return %[[L]]
func.func @gpt2_layer_norm(%ids: tensor<2x4xi64>, %wte: tensor<16x8xf32> {spk.param = "wte"},
                           %g0: tensor<8xf32> {spk.param = "ln_1.weight"},
                           %b0: tensor<8xf32> {spk.param = "ln_1.bias"},
                           %wfc: tensor<8x32xf32> {spk.param = "fc.weight"},
                           %bfc: tensor<32xf32> {spk.param = "fc.bias"},
                           %wp: tensor<32x8xf32> {spk.param = "proj.weight"},
                           %bp: tensor<8xf32> {spk.param = "proj.bias"},
                           %gf: tensor<8xf32> {spk.param = "ln_f.weight"},
                           %bf: tensor<8xf32> {spk.param = "ln_f.bias"},
                           %wh: tensor<16x8xf32> {spk.param = "head.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.embedding"(%wte, %ids) : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
  %1 = "aten.layer_norm"(%0, %g0, %b0) {normalized_shape = [8], cudnn_enable = false} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.view"(%1) {size = [-1, 8]} : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
  %3 = "aten.addmm"(%bfc, %2, %wfc) : (tensor<32xf32>, tensor<8x8xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
  %4 = "aten.view"(%3) {size = [2, 4, 32]} : (tensor<8x32xf32>) -> tensor<2x4x32xf32>
  %5 = "aten.gelu"(%4) : (tensor<2x4x32xf32>) -> tensor<2x4x32xf32>
  %6 = "aten.view"(%5) {size = [-1, 32]} : (tensor<2x4x32xf32>) -> tensor<8x32xf32>
  %7 = "aten.addmm"(%bp, %6, %wp) : (tensor<8xf32>, tensor<8x32xf32>, tensor<32x8xf32>) -> tensor<8x8xf32>
  %8 = "aten.view"(%7) {size = [2, 4, 8]} : (tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %9 = "aten.add.Tensor"(%0, %8) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %10 = "aten.layer_norm"(%9, %gf, %bf) {normalized_shape = [8], cudnn_enable = false} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %11 = "aten.linear"(%10, %wh) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %11 : tensor<2x4x16xf32>
}

// -----

// Post-LN (BERT): the LayerNorm's output is the residual stream itself (it feeds the next
// add), so neither its scale nor its mean subtraction can move; nothing changes.

// CHECK-LABEL: func.func @bert_post_ln
// CHECK:         %[[N0:.*]] = "aten.layer_norm"(%x, %g0, %b0) {normalized_shape = [8], eps = 1.0e-12, cudnn_enable = false}
// CHECK-NEXT:    %[[L:.*]] = "aten.linear"(%[[N0]], %w, %b)
// CHECK-NEXT:    %[[H:.*]] = "aten.add.Tensor"(%[[L]], %[[N0]])
// CHECK-NEXT:    %[[N1:.*]] = "aten.layer_norm"(%[[H]], %g1, %b1)
// CHECK-NEXT:    return %[[N1]]
func.func @bert_post_ln(%x: tensor<2x4x8xf32>, %g0: tensor<8xf32> {spk.param = "ln0.weight"},
                        %b0: tensor<8xf32> {spk.param = "ln0.bias"},
                        %w: tensor<8x8xf32> {spk.param = "dense.weight"},
                        %b: tensor<8xf32> {spk.param = "dense.bias"},
                        %g1: tensor<8xf32> {spk.param = "ln1.weight"},
                        %b1: tensor<8xf32> {spk.param = "ln1.bias"}) -> tensor<2x4x8xf32> {
  %0 = "aten.layer_norm"(%x, %g0, %b0) {normalized_shape = [8], eps = 1.0e-12, cudnn_enable = false} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w, %b) : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.add.Tensor"(%1, %0) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %3 = "aten.layer_norm"(%2, %g1, %b1) {normalized_shape = [8], eps = 1.0e-12, cudnn_enable = false} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  return %3 : tensor<2x4x8xf32>
}

// -----

// A norm whose output is also returned keeps its scale; one read only by linears (two of
// them, one shared weight) folds, each linear getting its own new weight.

// CHECK-LABEL: func.func @partial_fold
// CHECK:         %[[KEPT:.*]] = "aten.rms_norm"(%x, %g0) {normalized_shape = [8], eps = 1.0e-05}
// CHECK-NEXT:    %[[A:.*]] = "aten.linear"(%[[KEPT]], %w)
// CHECK-NEXT:    %[[N:.*]] = "aten.rms_norm"(%x) {normalized_shape = [8], eps = 1.0e-05}
// CHECK-NEXT:    %[[B:.*]] = "aten.linear"(%[[N]], %w.folded)
// CHECK-NEXT:    %[[C:.*]] = "aten.linear"(%[[N]], %w.folded.1)
// CHECK-NEXT:    return %[[KEPT]], %[[A]], %[[B]], %[[C]]
func.func @partial_fold(%x: tensor<4x8xf32>, %g0: tensor<8xf32> {spk.param = "g0"},
                        %g1: tensor<8xf32> {spk.param = "g1"},
                        %w: tensor<8x8xf32> {spk.param = "w"}) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %0 = "aten.rms_norm"(%x, %g0) {normalized_shape = [8], eps = 1.0e-05} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %2 = "aten.rms_norm"(%x, %g1) {normalized_shape = [8], eps = 1.0e-05} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %3 = "aten.linear"(%2, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %4 = "aten.linear"(%2, %w) : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  return %0, %1, %3, %4 : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}
