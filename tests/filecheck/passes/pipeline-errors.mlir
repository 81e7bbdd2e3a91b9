// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline=canonicalize,bogus,dce 2>&1 | filecheck %s --check-prefix=UNKNOWN-PASS
// RUN: not spokeshave-opt %s --split-input-file --pass-pipeline="cse,canonicalize{max-rewrite=3}" 2>&1 | filecheck %s --check-prefix=UNKNOWN-OPTION

// A bad pipeline is reported once, before any input is processed (not once per case),
// with what exists instead; nothing is printed and the exit status is 1.

// UNKNOWN-PASS-NOT:   Traceback
// UNKNOWN-PASS:       error: unknown pass 'bogus'; known passes: {{.*}}canonicalize{{.*}}cse{{.*}}dce{{.*}}fold-constants
// UNKNOWN-PASS-NOT:   error:
// UNKNOWN-PASS-NOT:   func.func
// UNKNOWN-PASS-NOT:   Traceback

// UNKNOWN-OPTION-NOT: Traceback
// UNKNOWN-OPTION:     error: pass 'canonicalize' has no option 'max-rewrite'; its options: max-rewrites=<int >= 0> (default 0)
// UNKNOWN-OPTION-NOT: error:
// UNKNOWN-OPTION-NOT: func.func
// UNKNOWN-OPTION-NOT: Traceback

func.func @first(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}

// -----

func.func @second(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
