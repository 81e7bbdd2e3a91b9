// RUN: spokeshave-opt %s --split-input-file --verify-diagnostics | filecheck %s

// Structural invariants, checked where they break: dominance, terminators, region scoping
// (from each op's record: spk.fused is isolated from above and ends in spk.yield), scalar
// constants and parameters. Processing goes on with the next case.

func.func @fused_yield_type(%x: tensor<4xf32>) -> tensor<4xf16> {
  // expected-error@+1 {{op "spk.fused": spk.yield gives (tensor<4xf32>) but the op returns (tensor<4xf16>)}}
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    %1 = "aten.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%1) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf16>
  return %0 : tensor<4xf16>
}

// -----

func.func @fused_region_args(%x: tensor<4xf32>) -> tensor<8xf32> {
  // expected-error@+1 {{op "spk.fused": the region's arguments must have the operand types}}
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<8xf32>):
    "spk.yield"(%a) : (tensor<8xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<8xf32>
  return %0 : tensor<8xf32>
}

// -----

func.func @fused_isolated(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    // expected-error@+1:5 {{op "aten.relu": operand #0 (a block argument) does not dominate this use}}
    %1 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%1) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @fused_without_terminator(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    // expected-error@+1 {{op "aten.relu": the block must end with 'spk.yield'}}
    %1 = "aten.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @yield_outside_fused(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error@+1 {{op "spk.yield": 'spk.yield' must be the last op of its block, and only there}}
  "spk.yield"(%x) : (tensor<4xf32>) -> ()
  return %x : tensor<4xf32>
}

// -----

func.func @undeclared_region_op(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error@+1 {{op "test.wrapper": an op with regions must have an op record}}
  %0 = "test.wrapper"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    "spk.yield"(%a) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @region_on_an_op_without_one(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error@+1 {{op "aten.relu": has regions but declares none}}
  %0 = "aten.relu"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    "spk.yield"(%a) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

func.func @constant_type() -> i64 {
  // expected-error@+1 {{op "spk.constant": value 1.5 does not fit type i64}}
  %0 = "spk.constant"() {value = 1.5} : () -> i64
  return %0 : i64
}

// -----

func.func @constant_attribute() -> i64 {
  // expected-error@+1 {{op "spk.constant": has no attribute 'scale'; its attributes: value}}
  %0 = "spk.constant"() {value = 1, scale = 2} : () -> i64
  return %0 : i64
}

// -----

// expected-error@+1 {{@param_twice: parameter 'w' is bound to two arguments}}
func.func @param_twice(%a: tensor<4xf32> {spk.param = "w"}, %b: tensor<4xf32> {spk.param = "w"}) -> tensor<4xf32> {
  return %a : tensor<4xf32>
}

// -----

// expected-error@+1:1 {{parameter 'p' has dynamic shape tensor<?x4xf32>; parameters must be static}}
func.func @dynamic_param(%x: tensor<?x4xf32> {spk.param = "p"}) -> tensor<?x4xf32> {
  return %x : tensor<?x4xf32>
}

// -----

// CHECK-LABEL: func.func @valid_after_errors
// CHECK:         %[[F:.*]] = "spk.fused"(%x) ({
// CHECK-NEXT:    ^bb0(%[[A:.*]]: tensor<4xf32>):
// CHECK-NEXT:      %[[R:.*]] = "aten.relu"(%[[A]])
// CHECK-NEXT:      "spk.yield"(%[[R]]) : (tensor<4xf32>) -> ()
// CHECK-NEXT:    }) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    return %[[F]] : tensor<4xf32>
func.func @valid_after_errors(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = "spk.fused"(%x) ({
  ^bb0(%a: tensor<4xf32>):
    %1 = "aten.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    "spk.yield"(%1) : (tensor<4xf32>) -> ()
  }) : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}
