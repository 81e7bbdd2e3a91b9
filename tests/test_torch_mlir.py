"""Every printed module of the test models parses with real MLIR (torch-mlir's parser).

The text form is MLIR's generic syntax, so `mlir::parseSourceString` must accept it with
unregistered dialects allowed (`aten.*`, `spk.*`, `py.*` are not registered dialects; `func`
is). Beyond "it parses", the op count of MLIR's view must equal ours, and MLIR's own generic
printout must keep every op name and every `spk.param` attribute.
"""
from __future__ import annotations

import re

import pytest

import spokeshave
from spokeshave.compiler.printer import print_module
from spokeshave_models import ALL, DEFAULT, FOLD, NONE, REAL

import torch_mlir.ir as ir  # a declared dependency: missing means a broken install


def mlir_parse(text: str):
    """Parse with MLIR; returns (MLIR's generic printout, number of ops in the entry body)."""
    with ir.Context() as ctx:
        ctx.allow_unregistered_dialects = True
        m = ir.Module.parse(text)
        assert m.operation.verify()
        funcs = [op for op in m.body.operations if op.operation.name == "func.func"]
        assert funcs, "no func.func in the module"
        body = funcs[-1].regions[0].blocks[0]
        n_ops = len(list(body.operations))
        generic = m.operation.get_asm(print_generic_op_form=True)
    return generic, n_ops


def check_with_mlir(module: spokeshave.Module) -> None:
    text = print_module(module)
    generic, n_ops = mlir_parse(text)
    f = module.entry
    assert n_ops == len(f.ops), f"MLIR sees {n_ops} ops, we have {len(f.ops)}"
    for name in {op.name for op in f.ops if op.name != "func.return"}:
        assert f'"{name}"' in generic, f"{name} lost in MLIR's printout"
    params = set(re.findall(r'spk\.param = "([^"]+)"', generic))
    assert params == set(f.params()), "spk.param attributes differ after MLIR's parse"
    # with Python source locations (`loc("modeling_bert.py":312:0)`)
    mlir_parse(print_module(module, debug_info=True))


def _param(name: str, pipeline: str, dynamic: bool):
    tag = {NONE: "none", DEFAULT: "default", FOLD: "fold"}[pipeline] + ("-dynamic" if dynamic else "")
    return pytest.param(name, pipeline, dynamic, id=f"{name}-{tag}",
                        marks=[pytest.mark.slow] if name in REAL else [])


CASES = ([_param(n, p, d) for n in ALL if n != "smollm2" for p, d in
          ((NONE, False), (DEFAULT, False), (FOLD, False), (FOLD, True))]
         + [_param("smollm2", DEFAULT, True), _param("smollm2", FOLD, True)])


@pytest.mark.parametrize("case,pipeline,dynamic", CASES, indirect=["case"])
def test_model_text_parses_with_mlir(case, pipeline, dynamic):
    check_with_mlir(case.compiled(pipeline, dynamic).module)


def test_unusual_ops_parse_with_mlir():
    """Multi-result ops (`%0:2 = ...`), `none` operands, list attributes, symbolic sizes."""
    from test_frontend import UnusualOps, unusual_inputs

    cm = spokeshave.compile(UnusualOps(), unusual_inputs(), pipeline="")
    text = print_module(cm.module)
    assert re.search(r"%\d+:2 = \"aten.topk\"", text)
    check_with_mlir(cm.module)


def test_mlir_rejects_broken_text():
    """The check has teeth: MLIR refuses a use of an undefined value."""
    bad = ('func.func @forward(%x: tensor<2xf32>) -> tensor<2xf32> {\n'
           '  %0 = "aten.neg"(%y) : (tensor<2xf32>) -> tensor<2xf32>\n'
           '  return %0 : tensor<2xf32>\n}\n')
    with pytest.raises(Exception):
        mlir_parse(bad)
