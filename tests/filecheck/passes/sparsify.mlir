// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="sparsify{pattern=2:4}" | filecheck %s
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="sparsify{pattern=2:4 layers=enc.* skip=enc.1.*|*.head}" | filecheck %s --check-prefix=SEL
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="sparsify{method=wanda}" --calibration=synthetic:4 | filecheck %s --check-prefix=CALIB
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="sparsify{method=sparsegpt}" --calibration=synthetic:4 | filecheck %s --check-prefix=CALIB
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="sparsify{method=wanda}" 2>&1 | filecheck %s --check-prefix=NO-CALIB
// RUN: spokeshave-opt %s --split-input-file --pass-pipeline="sparsify{pattern=2:4}" --verify-diagnostics >/dev/null

// NO-CALIB: error: pass 'sparsify{method=wanda}' needs calibration data: pass calibration=[batches] to spokeshave.compile

// Every linear becomes spk.linear_sparse24 reading the compressed weight: values
// [N, K/2] in the weight's dtype and 2-bit positions packed four to a byte [N, K/8]. The
// dense weights disappear; the bias stays an operand; a bias-less linear stays bias-less.

// CHECK-LABEL: func.func @mlp
// CHECK-NEXT:    %x: tensor<4x16xf32>,
// CHECK-NEXT:    %[[B:.*]]: tensor<32xf32> {spk.param = "enc.0.up.bias"},
// CHECK-NEXT:    %[[UV:.*]]: tensor<32x8xf32> {spk.param = "enc.0.up.sparse_values"},
// CHECK-NEXT:    %[[UM:.*]]: tensor<32x2xui8> {spk.param = "enc.0.up.sparse_meta"},
// CHECK-NEXT:    %[[DV:.*]]: tensor<8x16xf32> {spk.param = "enc.0.down.sparse_values"},
// CHECK-NEXT:    %[[DM:.*]]: tensor<8x4xui8> {spk.param = "enc.0.down.sparse_meta"}) -> tensor<4x8xf32> {
// CHECK-NEXT:         %[[U:.*]] = "spk.linear_sparse24"(%x, %[[UV]], %[[UM]], %[[B]]) : (tensor<4x16xf32>, tensor<32x8xf32>, tensor<32x2xui8>, tensor<32xf32>) -> tensor<4x32xf32>
// CHECK-NEXT:    %[[R:.*]] = "aten.relu"(%[[U]])
// CHECK-NEXT:    %[[D:.*]] = "spk.linear_sparse24"(%[[R]], %[[DV]], %[[DM]]) : (tensor<4x32xf32>, tensor<8x16xf32>, tensor<8x4xui8>) -> tensor<4x8xf32>
// CHECK-NEXT:    return %[[D]] : tensor<4x8xf32>
// CHECK-NOT:     "aten.linear"

// The calibrated methods (wanda: |W| * ||X||; sparsegpt: OBS mask and weight update), with
// `--calibration=synthetic:4` (seeded random batches), choose other weights to keep but
// write the same IR: the CALIB checks hold for both.
// CALIB-LABEL: func.func @mlp
// CALIB-NEXT:    %x: tensor<4x16xf32>,
// CALIB-NEXT:    %[[B:.*]]: tensor<32xf32> {spk.param = "enc.0.up.bias"},
// CALIB-NEXT:    %[[UV:.*]]: tensor<32x8xf32> {spk.param = "enc.0.up.sparse_values"},
// CALIB-NEXT:    %[[UM:.*]]: tensor<32x2xui8> {spk.param = "enc.0.up.sparse_meta"},
// CALIB-NEXT:    %[[DV:.*]]: tensor<8x16xf32> {spk.param = "enc.0.down.sparse_values"},
// CALIB-NEXT:    %[[DM:.*]]: tensor<8x4xui8> {spk.param = "enc.0.down.sparse_meta"}) -> tensor<4x8xf32> {
// CALIB-NEXT:    %[[U:.*]] = "spk.linear_sparse24"(%x, %[[UV]], %[[UM]], %[[B]]) : (tensor<4x16xf32>, tensor<32x8xf32>, tensor<32x2xui8>, tensor<32xf32>) -> tensor<4x32xf32>
// CALIB-NEXT:    %[[R:.*]] = "aten.relu"(%[[U]])
// CALIB-NEXT:    %[[D:.*]] = "spk.linear_sparse24"(%[[R]], %[[DV]], %[[DM]]) : (tensor<4x32xf32>, tensor<8x16xf32>, tensor<8x4xui8>) -> tensor<4x8xf32>
// CALIB-NEXT:    return %[[D]] : tensor<4x8xf32>

// Selection: enc.0.* is pruned, enc.1.* is skipped.
// SEL-LABEL: func.func @mlp
// SEL:         "spk.linear_sparse24"
// SEL:         "spk.linear_sparse24"
func.func @mlp(%x: tensor<4x16xf32>,
               %wu: tensor<32x16xf32> {spk.param = "enc.0.up.weight"},
               %bu: tensor<32xf32> {spk.param = "enc.0.up.bias"},
               %wd: tensor<8x32xf32> {spk.param = "enc.0.down.weight"}) -> tensor<4x8xf32> {
  %0 = "aten.linear"(%x, %wu, %bu) : (tensor<4x16xf32>, tensor<32x16xf32>, tensor<32xf32>) -> tensor<4x32xf32>
  %1 = "aten.relu"(%0) : (tensor<4x32xf32>) -> tensor<4x32xf32>
  %2 = "aten.linear"(%1, %wd) : (tensor<4x32xf32>, tensor<8x32xf32>) -> tensor<4x8xf32>
  return %2 : tensor<4x8xf32>
}

// -----

// A layer whose in-features (6) are not divisible by 4 stays dense (and is reported);
// the layer after it is pruned. An odd number of groups (K = 12: 3 groups) pads the
// metadata to whole bytes.

// CHECK-LABEL: func.func @indivisible_in_features
// CHECK-NEXT:    %x: tensor<?x6xf32>,
// CHECK-NEXT:    %[[W0:.*]]: tensor<12x6xf32> {spk.param = "enc.1.a.weight"},
// CHECK-NEXT:    %[[V:.*]]: tensor<4x6xf32> {spk.param = "enc.1.b.sparse_values"},
// CHECK-NEXT:    %[[M:.*]]: tensor<4x2xui8> {spk.param = "enc.1.b.sparse_meta"}) -> tensor<?x4xf32> {
// CHECK-NEXT:       %[[A:.*]] = "aten.linear"(%x, %[[W0]]) :
// CHECK-NEXT:    %[[B:.*]] = "spk.linear_sparse24"(%[[A]], %[[V]], %[[M]]) : (tensor<?x12xf32>, tensor<4x6xf32>, tensor<4x2xui8>) -> tensor<?x4xf32>
// CHECK-NEXT:    return %[[B]]

// CALIB-LABEL: func.func @indivisible_in_features
// CALIB-NEXT:    %x: tensor<?x6xf32>,
// CALIB-NEXT:    %[[W0:.*]]: tensor<12x6xf32> {spk.param = "enc.1.a.weight"},
// CALIB-NEXT:    %[[V:.*]]: tensor<4x6xf32> {spk.param = "enc.1.b.sparse_values"},
// CALIB-NEXT:    %[[M:.*]]: tensor<4x2xui8> {spk.param = "enc.1.b.sparse_meta"}) -> tensor<?x4xf32> {
// CALIB-NEXT:    %[[A:.*]] = "aten.linear"(%x, %[[W0]]) :
// CALIB-NEXT:    %[[B:.*]] = "spk.linear_sparse24"(%[[A]], %[[V]], %[[M]]) : (tensor<?x12xf32>, tensor<4x6xf32>, tensor<4x2xui8>) -> tensor<?x4xf32>
// CALIB-NEXT:    return %[[B]]

// enc.1.* is skipped by the SEL pipeline: nothing changes.
// SEL-LABEL: func.func @indivisible_in_features
// SEL-NOT:     "spk.linear_sparse24"
func.func @indivisible_in_features(%x: tensor<?x6xf32>,
                                   %wa: tensor<12x6xf32> {spk.param = "enc.1.a.weight"},
                                   %wb: tensor<4x12xf32> {spk.param = "enc.1.b.weight"}) -> tensor<?x4xf32> {
  // expected-remark@+1 {{sparsify: skipped layer 'enc.1.a': in-features 6 not divisible by 4}}
  %0 = "aten.linear"(%x, %wa) : (tensor<?x6xf32>, tensor<12x6xf32>) -> tensor<?x12xf32>
  %1 = "aten.linear"(%0, %wb) : (tensor<?x12xf32>, tensor<4x12xf32>) -> tensor<?x4xf32>
  return %1 : tensor<?x4xf32>
}

// -----

// A weight read by two linears is compressed once; both read the same compressed pair.
// A bf16 weight keeps bf16 values.

// CHECK-LABEL: func.func @shared_bf16
// CHECK-NEXT:    %x: tensor<2x8xbf16>,
// CHECK-NEXT:    %[[V:.*]]: tensor<8x4xbf16> {spk.param = "enc.2.proj.sparse_values"},
// CHECK-NEXT:    %[[M:.*]]: tensor<8x1xui8> {spk.param = "enc.2.proj.sparse_meta"}) -> tensor<2x8xbf16> {
// CHECK-NEXT:       %[[A:.*]] = "spk.linear_sparse24"(%x, %[[V]], %[[M]]) : (tensor<2x8xbf16>, tensor<8x4xbf16>, tensor<8x1xui8>) -> tensor<2x8xbf16>
// CHECK-NEXT:    %[[B:.*]] = "spk.linear_sparse24"(%[[A]], %[[V]], %[[M]]) :
// CHECK-NEXT:    return %[[B]]

// A weight shared by two linears is pruned once, with the statistics of both uses.
// CALIB-LABEL: func.func @shared_bf16
// CALIB-NEXT:    %x: tensor<2x8xbf16>,
// CALIB-NEXT:    %[[V:.*]]: tensor<8x4xbf16> {spk.param = "enc.2.proj.sparse_values"},
// CALIB-NEXT:    %[[M:.*]]: tensor<8x1xui8> {spk.param = "enc.2.proj.sparse_meta"}) -> tensor<2x8xbf16> {
// CALIB-NEXT:    %[[A:.*]] = "spk.linear_sparse24"(%x, %[[V]], %[[M]]) : (tensor<2x8xbf16>, tensor<8x4xbf16>, tensor<8x1xui8>) -> tensor<2x8xbf16>
// CALIB-NEXT:    %[[B:.*]] = "spk.linear_sparse24"(%[[A]], %[[V]], %[[M]]) :
// CALIB-NEXT:    return %[[B]]

// enc.2.* is selected by the SEL pipeline.
// SEL-LABEL: func.func @shared_bf16
// SEL:         "spk.linear_sparse24"
// SEL-NEXT:    "spk.linear_sparse24"
func.func @shared_bf16(%x: tensor<2x8xbf16>,
                       %w: tensor<8x8xbf16> {spk.param = "enc.2.proj.weight"}) -> tensor<2x8xbf16> {
  %0 = "aten.linear"(%x, %w) : (tensor<2x8xbf16>, tensor<8x8xbf16>) -> tensor<2x8xbf16>
  %1 = "aten.linear"(%0, %w) : (tensor<2x8xbf16>, tensor<8x8xbf16>) -> tensor<2x8xbf16>
  return %1 : tensor<2x8xbf16>
}

// -----

// A weight computed in the graph (here a transpose of a parameter) is not a stored weight:
// the linear stays dense. The head is a parameter and is pruned (SEL names neither layer).

// CHECK-LABEL: func.func @computed_weight
// CHECK:         %[[T:.*]] = "aten.t"(%w)
// CHECK-NEXT:    %[[A:.*]] = "aten.linear"(%x, %[[T]]) :
// CHECK-NEXT:    %[[B:.*]] = "spk.linear_sparse24"(%[[A]], %{{.*}}, %{{.*}}) :
// CHECK-NEXT:    return %[[B]]

// CALIB-LABEL: func.func @computed_weight
// CALIB:         %[[T:.*]] = "aten.t"(%w)
// CALIB-NEXT:    %[[A:.*]] = "aten.linear"(%x, %[[T]]) :
// CALIB-NEXT:    %[[B:.*]] = "spk.linear_sparse24"(%[[A]], %{{.*}}, %{{.*}}) :
// CALIB-NEXT:    return %[[B]]

// SEL-LABEL: func.func @computed_weight
// SEL-NOT:     "spk.linear_sparse24"
func.func @computed_weight(%x: tensor<2x8xf32>,
                           %w: tensor<8x8xf32> {spk.param = "emb.weight"},
                           %h: tensor<4x8xf32> {spk.param = "lm.head.weight"}) -> tensor<2x4xf32> {
  %0 = "aten.t"(%w) : (tensor<8x8xf32>) -> tensor<8x8xf32>
  // expected-remark@+1 {{sparsify: a linear skipped: its weight is computed, not a parameter}}
  %1 = "aten.linear"(%x, %0) : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
  %2 = "aten.linear"(%1, %h) : (tensor<2x8xf32>, tensor<4x8xf32>) -> tensor<2x4xf32>
  return %2 : tensor<2x4xf32>
}

// -----

// An LM head tied to the embedding table stays dense: the table is read by the embedding
// anyway, so a compressed copy would only add bytes (and both papers leave it dense).

// CHECK-LABEL: func.func @tied_head
// CHECK:         %[[E:.*]] = "aten.embedding"(%table, %ids) :
// CHECK-NEXT:    %[[P:.*]] = "spk.linear_sparse24"(%[[E]], %{{.*}}, %{{.*}}) :
// CHECK-NEXT:    %[[H:.*]] = "aten.linear"(%[[P]], %table) :
// CHECK-NEXT:    return %[[H]]

// CALIB-LABEL: func.func @tied_head
// CALIB:         %[[E:.*]] = "aten.embedding"(%table, %ids) :
// CALIB-NEXT:    %[[P:.*]] = "spk.linear_sparse24"(%[[E]], %{{.*}}, %{{.*}}) :
// CALIB-NEXT:    %[[H:.*]] = "aten.linear"(%[[P]], %table) :
// CALIB-NEXT:    return %[[H]]

// SEL-LABEL: func.func @tied_head
// SEL-NOT:     "spk.linear_sparse24"
func.func @tied_head(%ids: tensor<2x3xi64>,
                     %table: tensor<32x8xf32> {spk.param = "embed.weight"},
                     %wp: tensor<8x8xf32> {spk.param = "proj.weight"}) -> tensor<2x3x32xf32> {
  %0 = "aten.embedding"(%table, %ids) : (tensor<32x8xf32>, tensor<2x3xi64>) -> tensor<2x3x8xf32>
  %1 = "aten.linear"(%0, %wp) : (tensor<2x3x8xf32>, tensor<8x8xf32>) -> tensor<2x3x8xf32>
  // expected-remark@+1 {{sparsify: skipped layer 'embed': its weight is also read by a non-linear op (a tied embedding)}}
  %2 = "aten.linear"(%1, %table) : (tensor<2x3x8xf32>, tensor<32x8xf32>) -> tensor<2x3x32xf32>
  return %2 : tensor<2x3x32xf32>
}
