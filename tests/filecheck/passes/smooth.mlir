// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="smooth" 2>&1 >/dev/null | filecheck %s --check-prefix=NO-CALIB
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="smooth" 2>/dev/null | filecheck %s
// RUN: not spokeshave-opt %s --pass-pipeline="smooth{alpha=1.5}" 2>&1 | filecheck %s --check-prefix=BAD-ALPHA
// RUN: not spokeshave-opt %s --pass-pipeline="smooth{alpha=high}" 2>&1 | filecheck %s --check-prefix=BAD-TYPE
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="smooth" --calibration=synthetic:4 | filecheck %s --check-prefix=CAL
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="smooth" --calibration=synthetic:4 --verify-diagnostics >/dev/null
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="smooth{layers=blk.* skip=blk.k}" --calibration=synthetic:4 | filecheck %s --check-prefix=SEL

// `smooth` computes its per-channel scales from calibration activations. Without
// `--calibration`, where there is a linear to smooth it refuses, naming itself, instead of
// guessing. With `--calibration=synthetic:4` (seeded batches with outlier channels) the
// rewrite is checked here structurally: the norm reads new `<norm param>.smoothed`
// weight/bias (divided by s) and its linears read rescaled weights (columns multiplied by
// s). That the function is unchanged is tested numerically from Python
// (tests/test_outliers.py).

// BAD-ALPHA: error: pass 'smooth': option 'alpha' must be in [0, 1] (the share of the outliers moved into the weights); got 1.5
// BAD-TYPE: error: pass 'smooth': option 'alpha' expects float, got 'high'

// A LayerNorm feeding a linear: the case smooth rewrites; without calibration, an error.
// NO-CALIB: error: pass 'smooth' needs calibration data: pass calibration=[batches] to spokeshave.compile

// With calibration the norm's weight and bias are replaced by new parameters; the linear is
// the weight's only reader, so the rescaled tensor takes over the parameter's name (layer
// names, what `quantize`'s globs see, stay the model's).
// CAL-LABEL: func.func @ln_linear(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[W:[^:]+]]: tensor<16x8xf32> {spk.param = "fc.weight"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.smoothed"},
// CAL-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "ln.bias.smoothed"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%x, %[[G]], %[[B]]) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[N]], %[[W]]) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
// CAL-NEXT:    return %[[Y]]

// Not selected by SEL (layers=blk.*): unchanged.
// SEL-LABEL: func.func @ln_linear(
// SEL-NOT:     smoothed
// SEL:         %[[N:.+]] = "aten.layer_norm"(%x, %g, %b)
// SEL-NEXT:    "aten.linear"(%[[N]], %w)
func.func @ln_linear(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                     %b: tensor<8xf32> {spk.param = "ln.bias"},
                     %w: tensor<16x8xf32> {spk.param = "fc.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.layer_norm"(%x, %g, %b) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %1 : tensor<2x4x16xf32>
}

// -----

// GPT-2's Conv1D form (view/addmm/view) is a linear too: the same refusal.
// NO-CALIB: error: pass 'smooth' needs calibration data

// With calibration it first becomes `aten.linear` reading the transposed weight (fold-norms'
// normalisation), then is smoothed; a bias-less norm gets no bias.
// CAL-LABEL: func.func @conv1d(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[C:[^:]+]]: tensor<16xf32> {spk.param = "c_attn.bias"},
// CAL-NEXT:    %[[W:[^:]+]]: tensor<16x8xf32> {spk.param = "c_attn.weight.t"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.smoothed"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%x, %[[G]]) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[N]], %[[W]], %[[C]]) : (tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<2x4x16xf32>
// CAL-NEXT:    return %[[Y]]
func.func @conv1d(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                  %w: tensor<8x16xf32> {spk.param = "c_attn.weight"},
                  %c: tensor<16xf32> {spk.param = "c_attn.bias"}) -> tensor<2x4x16xf32> {
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.view"(%0) {size = [-1, 8]} : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
  %2 = "aten.addmm"(%c, %1, %w) : (tensor<16xf32>, tensor<8x8xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
  %3 = "aten.view"(%2) {size = [2, 4, 16]} : (tensor<8x16xf32>) -> tensor<2x4x16xf32>
  return %3 : tensor<2x4x16xf32>
}

// -----

// Nothing to smooth (a norm feeding no linear): no calibration needed, the IR is unchanged.
// Every case after this one needs calibration: without it, none is printed.
// CHECK-NOT:     func.func @ln_linear
// CHECK-NOT:     func.func @conv1d
// CHECK-LABEL: func.func @no_linear(
// CHECK:         %[[N:.*]] = "aten.layer_norm"(%x, %g) {normalized_shape = [8]}
// CHECK-NEXT:    %[[R:.*]] = "aten.relu"(%[[N]])
// CHECK-NEXT:    return %[[R]]
// CHECK-NOT:     func.func

// CAL-LABEL: func.func @no_linear(
// CAL-NOT:       smoothed
// CAL:           %[[N:.*]] = "aten.layer_norm"(%x, %g) {normalized_shape = [8]}
// CAL-NEXT:      %[[R:.*]] = "aten.relu"(%[[N]])
// CAL-NEXT:      return %[[R]]
func.func @no_linear(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"}) -> tensor<2x4x8xf32> {
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.relu"(%0) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return %1 : tensor<2x4x8xf32>
}

// -----

// Three linears (q with a bias, k, v) read one LayerNorm: they share one `s`, so there is
// one smoothed norm and all three read it. `blk.o` reads no norm output: it is left alone,
// with a remark at it (the --verify-diagnostics run).
// CAL-LABEL: func.func @qkv(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[WQ:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.q.weight"},
// CAL-NEXT:    %[[BQ:[^:]+]]: tensor<8xf32> {spk.param = "blk.q.bias"},
// CAL-NEXT:    %[[WK:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.k.weight"},
// CAL-NEXT:    %[[WV:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.v.weight"},
// CAL-NEXT:    %[[WO:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.o.weight"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.weight.smoothed"},
// CAL-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.bias.smoothed"}) -> tensor<2x4x8xf32> {
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%x, %[[G]], %[[B]]) {normalized_shape = [8]}
// CAL-NEXT:    %[[Q:.+]] = "aten.linear"(%[[N]], %[[WQ]], %[[BQ]])
// CAL-NEXT:    %[[K:.+]] = "aten.linear"(%[[N]], %[[WK]])
// CAL-NEXT:    %[[V:.+]] = "aten.linear"(%[[N]], %[[WV]])
// CAL-NEXT:    %[[M:.+]] = "aten.mul.Tensor"(%[[Q]], %[[K]])
// CAL-NEXT:    %[[A:.+]] = "aten.add.Tensor"(%[[M]], %[[V]])
// CAL-NEXT:    %[[O:.+]] = "aten.linear"(%[[A]], %[[WO]])
// CAL-NEXT:    return %[[O]]

// Selection: `skip=blk.k` leaves k reading the original norm, which therefore stays beside
// the smoothed one that q and v read.
// SEL-LABEL: func.func @qkv(
// SEL-NEXT:    %x: tensor<2x4x8xf32>,
// SEL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.weight"},
// SEL-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.bias"},
// SEL:         %[[GS:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.weight.smoothed"},
// SEL-NEXT:    %[[BS:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.bias.smoothed"}) -> tensor<2x4x8xf32> {
// SEL-NEXT:    %[[NS:.+]] = "aten.layer_norm"(%x, %[[GS]], %[[BS]])
// SEL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%x, %[[G]], %[[B]])
// SEL-NEXT:    "aten.linear"(%[[NS]], %wq, %bq)
// SEL-NEXT:    "aten.linear"(%[[N]], %wk)
// SEL-NEXT:    "aten.linear"(%[[NS]], %wv)
func.func @qkv(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "blk.ln.weight"},
               %b: tensor<8xf32> {spk.param = "blk.ln.bias"},
               %wq: tensor<8x8xf32> {spk.param = "blk.q.weight"},
               %bq: tensor<8xf32> {spk.param = "blk.q.bias"},
               %wk: tensor<8x8xf32> {spk.param = "blk.k.weight"},
               %wv: tensor<8x8xf32> {spk.param = "blk.v.weight"},
               %wo: tensor<8x8xf32> {spk.param = "blk.o.weight"}) -> tensor<2x4x8xf32> {
  %0 = "aten.layer_norm"(%x, %g, %b) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %wq, %bq) : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.linear"(%0, %wk) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %3 = "aten.linear"(%0, %wv) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %4 = "aten.mul.Tensor"(%1, %2) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %5 = "aten.add.Tensor"(%4, %3) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  // expected-remark@+1 {{smooth: skipped layer 'blk.o': its input is not the output of a normalisation it could be folded into}}
  %6 = "aten.linear"(%5, %wo) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  return %6 : tensor<2x4x8xf32>
}

// -----

// Post-LN: the norm output is also the residual (read by the add), which must not change.
// The original norm stays for the add; a second norm with the smoothed weight/bias is
// created for the linear.
// CAL-LABEL: func.func @post_ln(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight"},
// CAL-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "ln.bias"},
// CAL-NEXT:    %[[W:[^:]+]]: tensor<8x8xf32> {spk.param = "fc.weight"},
// CAL-NEXT:    %[[GS:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.smoothed"},
// CAL-NEXT:    %[[BS:[^:]+]]: tensor<8xf32> {spk.param = "ln.bias.smoothed"}) -> tensor<2x4x8xf32> {
// CAL-NEXT:    %[[NS:.+]] = "aten.layer_norm"(%x, %[[GS]], %[[BS]]) {normalized_shape = [8]}
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%x, %[[G]], %[[B]]) {normalized_shape = [8]}
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[NS]], %[[W]])
// CAL-NEXT:    %[[R:.+]] = "aten.add.Tensor"(%[[N]], %[[Y]])
// CAL-NEXT:    return %[[R]]
func.func @post_ln(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                   %b: tensor<8xf32> {spk.param = "ln.bias"},
                   %w: tensor<8x8xf32> {spk.param = "fc.weight"}) -> tensor<2x4x8xf32> {
  %0 = "aten.layer_norm"(%x, %g, %b) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.add.Tensor"(%0, %1) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return %2 : tensor<2x4x8xf32>
}

// -----

// RMSNorm: HF's exported chain (pow/mean/add/rsqrt/mul, `weight *`) is matched into one
// aten.rms_norm (same eps) and smoothed; a weight-less aten.rms_norm gains a weight (1 / s),
// named after the linear it feeds.
// CAL-LABEL: func.func @llama_rms(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[WQ:[^:]+]]: tensor<8x8xf32> {spk.param = "q.weight"},
// CAL-NEXT:    %[[WH:[^:]+]]: tensor<16x8xf32> {spk.param = "head.weight"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.smoothed"},
// CAL-NEXT:    %[[GH:[^:]+]]: tensor<8xf32> {spk.param = "head.norm.weight.smoothed"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[N0:.+]] = "aten.rms_norm"(%x, %[[G]]) {normalized_shape = [8], eps = 1.0e-06} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CAL-NEXT:    %[[Q:.+]] = "aten.linear"(%[[N0]], %[[WQ]])
// CAL-NEXT:    %[[N1:.+]] = "aten.rms_norm"(%[[Q]], %[[GH]]) {normalized_shape = [8], eps = 1.0e-05} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[N1]], %[[WH]])
// CAL-NEXT:    return %[[Y]]
func.func @llama_rms(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                     %wq: tensor<8x8xf32> {spk.param = "q.weight"},
                     %wh: tensor<16x8xf32> {spk.param = "head.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.pow.Tensor_Scalar"(%x) {exponent = 2} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.mean.dim"(%0) {dim = [-1], keepdim = true} : (tensor<2x4x8xf32>) -> tensor<2x4x1xf32>
  %2 = "aten.add.Tensor"(%1) {other = 1.0e-06} : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %3 = "aten.rsqrt"(%2) : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %4 = "aten.mul.Tensor"(%x, %3) : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  %5 = "aten.mul.Tensor"(%g, %4) : (tensor<8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %6 = "aten.linear"(%5, %wq) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %7 = "aten.rms_norm"(%6) {normalized_shape = [8], eps = 1.0e-05} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %8 = "aten.linear"(%7, %wh) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %8 : tensor<2x4x16xf32>
}

// -----

// An LM head tied to the embedding: the table is also read by aten.embedding, so the
// rescaled head weight is a new parameter `embed.weight.smoothed` and the embedding keeps
// reading the original.
// CAL-LABEL: func.func @tied(
// CAL-NEXT:    %ids: tensor<2x4xi64>,
// CAL-NEXT:    %[[E:[^:]+]]: tensor<16x8xf32> {spk.param = "embed.weight"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "norm.weight.smoothed"},
// CAL-NEXT:    %[[WS:[^:]+]]: tensor<16x8xf32> {spk.param = "embed.weight.smoothed"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[H:.+]] = "aten.embedding"(%[[E]], %ids)
// CAL-NEXT:    %[[N:.+]] = "aten.rms_norm"(%[[H]], %[[G]]) {normalized_shape = [8], eps = 1.0e-05}
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[N]], %[[WS]]) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
// CAL-NEXT:    return %[[Y]]
func.func @tied(%ids: tensor<2x4xi64>, %emb: tensor<16x8xf32> {spk.param = "embed.weight"},
                %g: tensor<8xf32> {spk.param = "norm.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
  %1 = "aten.rms_norm"(%0, %g) {normalized_shape = [8], eps = 1.0e-05} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.linear"(%1, %emb) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %2 : tensor<2x4x16xf32>
}
