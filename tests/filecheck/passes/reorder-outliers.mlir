// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="reorder-outliers" 2>&1 >/dev/null | filecheck %s --check-prefix=NO-CALIB
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="reorder-outliers" 2>/dev/null | filecheck %s
// RUN: not spokeshave-opt %s --pass-pipeline="reorder-outliers{metric=mean}" 2>&1 | filecheck %s --check-prefix=BAD-METRIC
// RUN: not spokeshave-opt %s --pass-pipeline="reorder-outliers{group=64}" 2>&1 | filecheck %s --check-prefix=BAD-OPTION
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="reorder-outliers" --calibration=synthetic:4 | filecheck %s --check-prefix=CAL
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="reorder-outliers{metric=weight}" --calibration=synthetic:4 | filecheck %s --check-prefix=WEIGHT

// `reorder-outliers` sorts channels by calibration activation magnitudes. Without
// `--calibration`, where there is a norm-fed linear it refuses, naming itself, instead of
// guessing an order. With `--calibration=synthetic:4` (seeded batches with outlier
// channels) the rewrite is checked here structurally: one `aten.index_select(x, perm)
// {dim = -1}` of the norm's input (new parameter `<norm>.perm`), the norm reading permuted
// `<param>.permuted` weight/bias, and its linears reading weights with permuted columns.
// That the function is unchanged is checked numerically from Python
// (tests/test_outliers.py).

// BAD-METRIC: error: pass 'reorder-outliers': option 'metric' must be one of absmax, rms, weight; got 'mean'
// BAD-OPTION: error: pass 'reorder-outliers' has no option 'group'; its options: layers=<str> (default '*'), skip=<str> (default ''), metric=<absmax|rms|weight> (default 'absmax')

// A LayerNorm feeding a linear: the case reorder-outliers rewrites; without calibration, an error.
// NO-CALIB: error: pass 'reorder-outliers' needs calibration data: pass calibration=[batches] to spokeshave.compile

// The linear is its weight's only reader: the permuted weight keeps the parameter's name.
// CAL-LABEL: func.func @ln_linear(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[W:[^:]+]]: tensor<16x8xf32> {spk.param = "fc.weight"},
// CAL-NEXT:    %[[P:[^:]+]]: tensor<8xi64> {spk.param = "ln.perm"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.permuted"},
// CAL-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "ln.bias.permuted"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[X:.+]] = "aten.index_select"(%x, %[[P]]) {dim = -1} : (tensor<2x4x8xf32>, tensor<8xi64>) -> tensor<2x4x8xf32>
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[X]], %[[G]], %[[B]]) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[N]], %[[W]]) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
// CAL-NEXT:    return %[[Y]]

// metric=weight sorts by the linears' weight-column abs-max: the same rewrite.
// WEIGHT-LABEL: func.func @ln_linear(
// WEIGHT:         %[[P:[^:]+]]: tensor<8xi64> {spk.param = "ln.perm"},
// WEIGHT-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.permuted"},
// WEIGHT-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "ln.bias.permuted"}) -> tensor<2x4x16xf32> {
// WEIGHT-NEXT:    %[[X:.+]] = "aten.index_select"(%x, %[[P]]) {dim = -1}
// WEIGHT-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[X]], %[[G]], %[[B]])
// WEIGHT-NEXT:    "aten.linear"(%[[N]], %w)
func.func @ln_linear(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"},
                     %b: tensor<8xf32> {spk.param = "ln.bias"},
                     %w: tensor<16x8xf32> {spk.param = "fc.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.layer_norm"(%x, %g, %b) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.linear"(%0, %w) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %1 : tensor<2x4x16xf32>
}

// -----

// GPT-2's Conv1D form (view/addmm/view) is a linear too: the same refusal.
// NO-CALIB: error: pass 'reorder-outliers' needs calibration data

// With calibration it becomes `aten.linear` reading the transposed weight, then is reordered;
// a bias-less norm gets no bias.
// CAL-LABEL: func.func @conv1d(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[C:[^:]+]]: tensor<16xf32> {spk.param = "c_attn.bias"},
// CAL-NEXT:    %[[W:[^:]+]]: tensor<16x8xf32> {spk.param = "c_attn.weight.t"},
// CAL-NEXT:    %[[P:[^:]+]]: tensor<8xi64> {spk.param = "ln.perm"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.permuted"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[X:.+]] = "aten.index_select"(%x, %[[P]]) {dim = -1}
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[X]], %[[G]]) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
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

// Nothing to reorder (a norm feeding no linear): no calibration needed, the IR is unchanged.
// Every case after this one needs calibration: without it, none is printed.
// CHECK-NOT:     func.func @ln_linear
// CHECK-NOT:     func.func @conv1d
// CHECK-LABEL: func.func @no_linear(
// CHECK:         %[[N:.*]] = "aten.layer_norm"(%x, %g) {normalized_shape = [8]}
// CHECK-NEXT:    %[[R:.*]] = "aten.relu"(%[[N]])
// CHECK-NEXT:    return %[[R]]
// CHECK-NOT:     func.func

// CAL-LABEL: func.func @no_linear(
// CAL-NOT:       aten.index_select
// CAL:           %[[N:.*]] = "aten.layer_norm"(%x, %g) {normalized_shape = [8]}
// CAL-NEXT:      %[[R:.*]] = "aten.relu"(%[[N]])
// CAL-NEXT:      return %[[R]]
func.func @no_linear(%x: tensor<2x4x8xf32>, %g: tensor<8xf32> {spk.param = "ln.weight"}) -> tensor<2x4x8xf32> {
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [8]} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %1 = "aten.relu"(%0) : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  return %1 : tensor<2x4x8xf32>
}

// -----

// Three linears (q with a bias, k, v) read one LayerNorm: they share its permutation, so
// there is one gather and one permuted norm. `blk.o` reads no norm output: left alone.
// CAL-LABEL: func.func @qkv(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[WQ:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.q.weight"},
// CAL-NEXT:    %[[BQ:[^:]+]]: tensor<8xf32> {spk.param = "blk.q.bias"},
// CAL-NEXT:    %[[WK:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.k.weight"},
// CAL-NEXT:    %[[WV:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.v.weight"},
// CAL-NEXT:    %[[WO:[^:]+]]: tensor<8x8xf32> {spk.param = "blk.o.weight"},
// CAL-NEXT:    %[[P:[^:]+]]: tensor<8xi64> {spk.param = "blk.ln.perm"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.weight.permuted"},
// CAL-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "blk.ln.bias.permuted"}) -> tensor<2x4x8xf32> {
// CAL-NEXT:    %[[X:.+]] = "aten.index_select"(%x, %[[P]]) {dim = -1}
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[X]], %[[G]], %[[B]]) {normalized_shape = [8]}
// CAL-NEXT:    %[[Q:.+]] = "aten.linear"(%[[N]], %[[WQ]], %[[BQ]])
// CAL-NEXT:    %[[K:.+]] = "aten.linear"(%[[N]], %[[WK]])
// CAL-NEXT:    %[[V:.+]] = "aten.linear"(%[[N]], %[[WV]])
// CAL-NEXT:    %[[M:.+]] = "aten.mul.Tensor"(%[[Q]], %[[K]])
// CAL-NEXT:    %[[A:.+]] = "aten.add.Tensor"(%[[M]], %[[V]])
// CAL-NEXT:    %[[O:.+]] = "aten.linear"(%[[A]], %[[WO]])
// CAL-NEXT:    return %[[O]]

// WEIGHT-LABEL: func.func @qkv(
// WEIGHT:         %[[P:[^:]+]]: tensor<8xi64> {spk.param = "blk.ln.perm"},
// WEIGHT:         %[[X:.+]] = "aten.index_select"(%x, %[[P]]) {dim = -1}
// WEIGHT-NEXT:    %[[N:.+]] = "aten.layer_norm"(%[[X]],
// WEIGHT-NEXT:    "aten.linear"(%[[N]], %wq, %bq)
// WEIGHT-NEXT:    "aten.linear"(%[[N]], %wk)
// WEIGHT-NEXT:    "aten.linear"(%[[N]], %wv)
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
  %6 = "aten.linear"(%5, %wo) : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  return %6 : tensor<2x4x8xf32>
}

// -----

// Post-LN: the norm output is also the residual (read by the add), which must keep its
// channel order. The original norm stays for the add; the linear reads a second, permuted
// norm of the gathered input.
// CAL-LABEL: func.func @post_ln(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight"},
// CAL-NEXT:    %[[B:[^:]+]]: tensor<8xf32> {spk.param = "ln.bias"},
// CAL-NEXT:    %[[W:[^:]+]]: tensor<8x8xf32> {spk.param = "fc.weight"},
// CAL-NEXT:    %[[P:[^:]+]]: tensor<8xi64> {spk.param = "ln.perm"},
// CAL-NEXT:    %[[GP:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.permuted"},
// CAL-NEXT:    %[[BP:[^:]+]]: tensor<8xf32> {spk.param = "ln.bias.permuted"}) -> tensor<2x4x8xf32> {
// CAL-NEXT:    %[[X:.+]] = "aten.index_select"(%x, %[[P]]) {dim = -1}
// CAL-NEXT:    %[[NP:.+]] = "aten.layer_norm"(%[[X]], %[[GP]], %[[BP]]) {normalized_shape = [8]}
// CAL-NEXT:    %[[N:.+]] = "aten.layer_norm"(%x, %[[G]], %[[B]]) {normalized_shape = [8]}
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[NP]], %[[W]])
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

// RMSNorm: HF's exported chain is matched into aten.rms_norm (same eps) and reordered; each
// norm gets its own permutation. A weight-less aten.rms_norm gains the (permuted) unit
// weight; its parameters are named after the linear it feeds.
// CAL-LABEL: func.func @llama_rms(
// CAL-NEXT:    %x: tensor<2x4x8xf32>,
// CAL-NEXT:    %[[WQ:[^:]+]]: tensor<8x8xf32> {spk.param = "q.weight"},
// CAL-NEXT:    %[[WH:[^:]+]]: tensor<16x8xf32> {spk.param = "head.weight"},
// CAL-NEXT:    %[[P0:[^:]+]]: tensor<8xi64> {spk.param = "ln.perm"},
// CAL-NEXT:    %[[G0:[^:]+]]: tensor<8xf32> {spk.param = "ln.weight.permuted"},
// CAL-NEXT:    %[[P1:[^:]+]]: tensor<8xi64> {spk.param = "head.norm.perm"},
// CAL-NEXT:    %[[G1:[^:]+]]: tensor<8xf32> {spk.param = "head.norm.weight.permuted"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[X0:.+]] = "aten.index_select"(%x, %[[P0]]) {dim = -1}
// CAL-NEXT:    %[[N0:.+]] = "aten.rms_norm"(%[[X0]], %[[G0]]) {normalized_shape = [8], eps = 1.0e-06} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CAL-NEXT:    %[[Q:.+]] = "aten.linear"(%[[N0]], %[[WQ]])
// CAL-NEXT:    %[[X1:.+]] = "aten.index_select"(%[[Q]], %[[P1]]) {dim = -1}
// CAL-NEXT:    %[[N1:.+]] = "aten.rms_norm"(%[[X1]], %[[G1]]) {normalized_shape = [8], eps = 1.0e-05} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
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

// An LM head tied to the embedding: the table is also read by aten.embedding, so the head
// reads a new parameter `embed.weight.permuted` and the embedding the original.
// CAL-LABEL: func.func @tied(
// CAL-NEXT:    %ids: tensor<2x4xi64>,
// CAL-NEXT:    %[[E:[^:]+]]: tensor<16x8xf32> {spk.param = "embed.weight"},
// CAL-NEXT:    %[[P:[^:]+]]: tensor<8xi64> {spk.param = "norm.perm"},
// CAL-NEXT:    %[[G:[^:]+]]: tensor<8xf32> {spk.param = "norm.weight.permuted"},
// CAL-NEXT:    %[[WP:[^:]+]]: tensor<16x8xf32> {spk.param = "embed.weight.permuted"}) -> tensor<2x4x16xf32> {
// CAL-NEXT:    %[[H:.+]] = "aten.embedding"(%[[E]], %ids)
// CAL-NEXT:    %[[X:.+]] = "aten.index_select"(%[[H]], %[[P]]) {dim = -1}
// CAL-NEXT:    %[[N:.+]] = "aten.rms_norm"(%[[X]], %[[G]]) {normalized_shape = [8], eps = 1.0e-05}
// CAL-NEXT:    %[[Y:.+]] = "aten.linear"(%[[N]], %[[WP]]) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
// CAL-NEXT:    return %[[Y]]

// WEIGHT-LABEL: func.func @tied(
// WEIGHT:         "aten.embedding"(%emb, %ids)
// WEIGHT-NEXT:    "aten.index_select"
// WEIGHT-NEXT:    "aten.rms_norm"
// WEIGHT-NEXT:    "aten.linear"(%{{.+}}, %embed.weight.permuted)
func.func @tied(%ids: tensor<2x4xi64>, %emb: tensor<16x8xf32> {spk.param = "embed.weight"},
                %g: tensor<8xf32> {spk.param = "norm.weight"}) -> tensor<2x4x16xf32> {
  %0 = "aten.embedding"(%emb, %ids) : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
  %1 = "aten.rms_norm"(%0, %g) {normalized_shape = [8], eps = 1.0e-05} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %2 = "aten.linear"(%1, %emb) : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  return %2 : tensor<2x4x16xf32>
}
