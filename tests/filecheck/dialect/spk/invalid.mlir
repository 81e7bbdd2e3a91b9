// RUN: spokeshave-opt %s --split-input-file --verify-diagnostics

// What the records of the compressed linears (compiler/dialect/spk.py) reject, each at the
// op that breaks the rule.

func.func @w8_operand_count(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8": expects operands (input, qweight, scale, [bias]), got 2}}
  %0 = "spk.linear_w8"(%x, %q) : (tensor<2x8xf32>, tensor<4x8xi8>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w8_qweight_dtype(%x: tensor<2x8xf32>, %q: tensor<4x8xf32> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8": qweight must be a 2-D i8 tensor, got tensor<4x8xf32>}}
  %0 = "spk.linear_w8"(%x, %q, %s) : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w8a8_integer_input(%x: tensor<2x8xi64>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"}) -> tensor<2x4xi64> {
  // expected-error@+1 {{op "spk.linear_w8a8": input must be a f32|f16|bf16|f64 tensor, got tensor<2x8xi64>}}
  %0 = "spk.linear_w8a8"(%x, %q, %s) : (tensor<2x8xi64>, tensor<4x8xi8>, tensor<4xf32>) -> tensor<2x4xi64>
  return %0 : tensor<2x4xi64>
}

// -----

func.func @w8a8_scale_per_channel(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<8xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8a8": scale must be tensor<4xf32> (one per output channel), got tensor<8xf32>}}
  %0 = "spk.linear_w8a8"(%x, %q, %s) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<8xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @fp8_in_features(%x: tensor<2x6xf32>, %q: tensor<4x8xf8E4M3FN> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_fp8": input's last dim 6 != in-features 8}}
  %0 = "spk.linear_fp8"(%x, %q, %s) : (tensor<2x6xf32>, tensor<4x8xf8E4M3FN>, tensor<4xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w8_result_type(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"}) -> tensor<2x8xf32> {
  // expected-error@+1 {{op "spk.linear_w8": result type (tensor<2x8xf32>) does not match the inferred (tensor<2x4xf32>)}}
  %0 = "spk.linear_w8"(%x, %q, %s) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>) -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @w8_bias(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"}, %b: tensor<8xf32> {spk.param = "b"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8": bias must be [4], got tensor<8xf32>}}
  %0 = "spk.linear_w8"(%x, %q, %s, %b) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<8xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w4g_missing_attribute(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x2xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w4g": needs attribute 'symmetric'}}
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 4} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w4g_odd_group(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x2xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w4g": group must be a positive even integer, got 3}}
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 3, symmetric = true} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w4g_bool_group(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x2xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w4g": attribute 'group' must be int, got True}}
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = true, symmetric = true} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w4g_scale_shape(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x4xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w4g": scale must be tensor<4x2xf32>, got tensor<4x4xf32>}}
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 4, symmetric = true} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x4xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

// Asymmetric int4 reads zero points before the bias: without them the operands do not fit.
func.func @w4g_asymmetric_needs_zeros(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x2xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w4g": expects operands (input, qweight, scale, [zeros], [bias]), got 3}}
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 4, symmetric = false} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w4g_group_divides(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x2xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w4g": in-features 8 are not divisible by group 6}}
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 6, symmetric = true} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w4g_unknown_attribute(%x: tensor<2x8xf32>, %q: tensor<4x4xui8> {spk.param = "q"}, %s: tensor<4x2xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w4g": has no attribute 'groups'; its attributes: group, symmetric}}
  %0 = "spk.linear_w4g"(%x, %q, %s) {group = 4, symmetric = true, groups = 4} : (tensor<2x8xf32>, tensor<4x4xui8>, tensor<4x2xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @sparse24_meta(%x: tensor<2x16xf32>, %v: tensor<4x8xf32> {spk.param = "v"}, %m: tensor<4x4xui8> {spk.param = "m"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_sparse24": meta must be tensor<4x2xui8> for values tensor<4x8xf32>, got tensor<4x4xui8>}}
  %0 = "spk.linear_sparse24"(%x, %v, %m) : (tensor<2x16xf32>, tensor<4x8xf32>, tensor<4x4xui8>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @sparse24_values_dtype(%x: tensor<2x16xf32>, %v: tensor<4x8xf16> {spk.param = "v"}, %m: tensor<4x2xui8> {spk.param = "m"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_sparse24": values (f16) must have the input's dtype (f32)}}
  %0 = "spk.linear_sparse24"(%x, %v, %m) : (tensor<2x16xf32>, tensor<4x8xf16>, tensor<4x2xui8>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @sparse24_groups_of_four(%x: tensor<2x6xf32>, %v: tensor<4x3xf32> {spk.param = "v"}, %m: tensor<4x1xui8> {spk.param = "m"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_sparse24": values have 3 columns: in-features 6 not divisible by 4}}
  %0 = "spk.linear_sparse24"(%x, %v, %m) : (tensor<2x6xf32>, tensor<4x3xf32>, tensor<4x1xui8>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @split_outlier_columns(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"},
                                 %ow: tensor<4x3xf32> {spk.param = "ow"}, %oi: tensor<2xi64> {spk.param = "oi"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8a8_split": oweight must be a float tensor [4, 2] (out, outlier columns), got tensor<4x3xf32>}}
  %0 = "spk.linear_w8a8_split"(%x, %q, %s, %ow, %oi) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4x3xf32>, tensor<2xi64>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @split_index_dtype(%x: tensor<2x8xf32>, %q: tensor<4x8xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"},
                             %ow: tensor<4x2xf32> {spk.param = "ow"}, %oi: tensor<2xi32> {spk.param = "oi"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8_split": oindex must be a 1-D i64 tensor, got tensor<2xi32>}}
  %0 = "spk.linear_w8_split"(%x, %q, %s, %ow, %oi) : (tensor<2x8xf32>, tensor<4x8xi8>, tensor<4xf32>, tensor<4x2xf32>, tensor<2xi32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w8a8g_group_not_dividing(%x: tensor<2x48xf32>, %q: tensor<4x48xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8a8g": in-features 48 are not divisible by the activation group 32}}
  %0 = "spk.linear_w8a8g"(%x, %q, %s) {group = 32} : (tensor<2x48xf32>, tensor<4x48xi8>, tensor<4xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @w8a8g_group_too_large(%x: tensor<2x1024xf32>, %q: tensor<4x1024xi8> {spk.param = "q"}, %s: tensor<4xf32> {spk.param = "s"}) -> tensor<2x4xf32> {
  // expected-error@+1 {{op "spk.linear_w8a8g": group must be a multiple of 16 up to 512 (int32 partial sums exact in float32), got 1024}}
  %0 = "spk.linear_w8a8g"(%x, %q, %s) {group = 1024} : (tensor<2x1024xf32>, tensor<4x1024xi8>, tensor<4xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}
