"""The fuzzers' seed corpus (shared by conftest.py and the tests, hence not in conftest).

The printed IR of real models (the tiny random-weight GPT-2, Llama and BERT, and
all-MiniLM-L6-v2), every case of the FileCheck suite, and a hand-written module with the
constructs those lack (quantized ops, an `spk.fused` region, multi-result ops, every
attribute kind, a second function); the real ones also printed with locations.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import spokeshave
from spokeshave.compiler.parser import parse_module
from spokeshave.compiler.printer import print_module

TESTS = Path(__file__).resolve().parent.parent
_SPLIT = re.compile(r"^// -----\s*$", re.M)  # spokeshave-opt --split-input-file's marker

# Every construct the printer writes, as it writes it (a fixed point of print . parse): a
# quantized linear (int8 weight and scale parameters), a fused region with block arguments,
# a multi-result op and its uses, a scalar constant, each attribute kind (negative, big and
# tiny numbers, escapes, nested lists, types, unit, inf/nan), a quoted attribute name and a
# second function.
HANDWRITTEN = """\
func.func @forward(
    %x: tensor<4x?x256xf32>,
    %w.qweight: tensor<64x256xi8> {spk.param = "l0.qweight"},
    %w.scale: tensor<64xf32> {spk.param = "l0.scale"},
    %b: tensor<64xf32> {spk.param = "l0.bias"}) -> (tensor<4x?x32xf32>, i64) {
  %0 = "spk.linear_w8"(%x, %w.qweight, %w.scale, %b) : (tensor<4x?x256xf32>, tensor<64x256xi8>, tensor<64xf32>, tensor<64xf32>) -> tensor<4x?x64xf32>
  %1:2 = "aten.split.Tensor"(%0) {split_size = 32, dim = -1} : (tensor<4x?x64xf32>) -> (tensor<4x?x32xf32>, tensor<4x?x32xf32>)
  %2 = "spk.constant"() {value = 3} : () -> i64
  %3 = "spk.fused"(%1#0, %1#1) ({
  ^bb0(%a: tensor<4x?x32xf32>, %c: tensor<4x?x32xf32>):
    %4 = "aten.mul.Tensor"(%a, %c) : (tensor<4x?x32xf32>, tensor<4x?x32xf32>) -> tensor<4x?x32xf32>
    %5 = "aten.gelu"(%4) {approximate = "tanh"} : (tensor<4x?x32xf32>) -> tensor<4x?x32xf32>
    "spk.yield"(%5) : (tensor<4x?x32xf32>) -> ()
  }) : (tensor<4x?x32xf32>, tensor<4x?x32xf32>) -> tensor<4x?x32xf32>
  %6 = "aten.foo"(%3) {i = -3, f = 1.0e-12, g = 2.5, big = 9223372036854775807, small = -9223372036854775808, s = "a\\"b\\0A\\E2\\82\\AC", l = [1, [2.0, "x"], true, []], d = bf16, t = tensor<2x?xcomplex<f32>>, u, inf = 0x7FF0000000000000 : f64, nan = 0x7FF8000000000000 : f64, "quoted name" = false} : (tensor<4x?x32xf32>) -> tensor<4x?x32xf32>
  %7 = "spk.linear_w4g"(%6, %w.qweight, %w.scale) {group = 128, symmetric = true} : (tensor<4x?x32xf32>, tensor<64x256xi8>, tensor<64xf32>) -> tensor<4x?x32xf32>
  return %7, %2 : tensor<4x?x32xf32>, i64
}

func.func @helper(%y: tensor<i64>, %z: none, %s: f64) -> tensor<i64> {
  %0 = "aten.add.Scalar"(%y, %s) {alpha = 1} : (tensor<i64>, f64) -> tensor<i64>
  return %0 : tensor<i64>
}
"""


def filecheck_cases() -> list[tuple[str, str]]:
    cases = []
    for path in sorted((TESTS / "filecheck").rglob("*.mlir")):
        if "Output" in path.parts:
            continue
        for i, chunk in enumerate(_SPLIT.split(path.read_text(encoding="utf-8"))):
            cases.append((f"{path.relative_to(TESTS)}#{i}", chunk))
    return cases


def with_locations(text: str) -> str:
    """`text` with a `loc(...)` on every op and function (their places in `text`)."""
    return print_module(parse_module(text, "seed.mlir"), debug_info=True)


def build_seeds(imported: Callable[[str], spokeshave.CompiledModel]) -> list[tuple[str, str]]:
    """(name, IR text) pairs, real models first. `imported(name)` is the model `name` of
    `spokeshave_models.ALL` compiled with no passes (the test session shares those)."""
    out = [(f"tiny_{name}", str(imported(name).module)) for name in ("gpt2", "llama", "bert")]
    minilm_module = imported("minilm").module
    out.append(("minilm", str(minilm_module)))
    out.append(("minilm+loc", with_locations(str(minilm_module))))
    out.append(("handwritten", HANDWRITTEN))
    out.append(("handwritten+loc", with_locations(HANDWRITTEN)))
    out.extend(filecheck_cases())
    return out
