// RUN: spokeshave-opt %s --split-input-file --verify-diagnostics

// The ATen ops with records (compiler/dialect/aten.py): their shape rules and attributes.

func.func @linear_in_features(%x: tensor<4x8xf32>, %w: tensor<16x9xf32> {spk.param = "w"}) -> tensor<4x16xf32> {
  // expected-error@+1 {{op "aten.linear": input's last dim 8 != weight's in-features 9}}
  %0 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x9xf32>) -> tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}

// -----

func.func @linear_bias(%x: tensor<4x8xf32>, %w: tensor<16x8xf32> {spk.param = "w"}, %b: tensor<8xf32> {spk.param = "b"}) -> tensor<4x16xf32> {
  // expected-error@+1 {{op "aten.linear": bias must be [16], got tensor<8xf32>}}
  %0 = "aten.linear"(%x, %w, %b) : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}

// -----

func.func @linear_weight_rank(%x: tensor<4x8xf32>, %w: tensor<8xf32> {spk.param = "w"}) -> tensor<4x16xf32> {
  // expected-error@+1 {{op "aten.linear": weight must be a 2-D tensor, got tensor<8xf32>}}
  %0 = "aten.linear"(%x, %w) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x16xf32>
  return %0 : tensor<4x16xf32>
}

// -----

func.func @linear_operand_count(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // expected-error@+1 {{op "aten.linear": expects operands (input, weight, [bias]), got 1}}
  %0 = "aten.linear"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return %0 : tensor<4x8xf32>
}

// -----

func.func @inferred_result_type(%x: tensor<4x8xf32>) -> tensor<8x8xf32> {
  // expected-error@+1 {{op "aten.relu": result type (tensor<8x8xf32>) does not match the inferred (tensor<4x8xf32>)}}
  %0 = "aten.relu"(%x) : (tensor<4x8xf32>) -> tensor<8x8xf32>
  return %0 : tensor<8x8xf32>
}

// -----

func.func @gelu_approximate(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error@+1 {{op "aten.gelu": approximate must be "none" or "tanh", got 'erf'}}
  %0 = "aten.gelu"(%x) {approximate = "erf"} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @layer_norm_shape(%x: tensor<2x8xf32>, %g: tensor<8xf32> {spk.param = "g"}) -> tensor<2x8xf32> {
  // expected-error@+1 {{op "aten.layer_norm": normalized_shape [16] does not match the trailing dims of tensor<2x8xf32>}}
  %0 = "aten.layer_norm"(%x, %g) {normalized_shape = [16]} : (tensor<2x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @softmax_dim(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error@+1 {{op "aten.softmax.int": dim 2 out of range for tensor<2x8xf32>}}
  %0 = "aten.softmax.int"(%x) {dim = 2} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}
