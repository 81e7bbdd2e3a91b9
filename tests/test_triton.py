"""The Triton backend under `TRITON_INTERPRET=1` (no GPU here or in CI): every compressed
GEMM against the reference backend's emulation of the same compressed model, at sizes that
exercise the masks; the clear error without a GPU; the fallback of a failing kernel."""
from __future__ import annotations

import warnings

import pytest
import torch

import spokeshave
from spokeshave.backends.triton.runtime import GemmCall, TritonBackendWarning
from spokeshave.compiler.errors import SpokeshaveError


@pytest.fixture
def interpret(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("SPOKESHAVE_TRITON_CACHE", str(tmp_path / "triton"))


def _mlp(k_in=48, hidden=32, n_out=19, bias=True):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(k_in, hidden, bias=bias), torch.nn.GELU(),
                               torch.nn.Linear(hidden, n_out, bias=bias))


PIPELINES = {
    "w8": "quantize{scheme=w8}",
    "w8a8": "quantize{scheme=w8a8}",
    "fp8": "quantize{scheme=fp8}",
    "w4g": "quantize{scheme=w4g group=16}",
    "w4g-zeros": "quantize{scheme=w4g group=16 symmetric=false}",
    "sparse24": "sparsify{method=magnitude}",
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_each_compressed_gemm_matches_the_reference(interpret, kind, bias):
    m = _mlp(bias=bias)
    # rows: 1 (decode), 15 (under one 16-row tile), 33 (crosses a 32-row tile); N = 32 and
    # 19 (a masked column tile), K = 48 and 32 (a masked K tail for BK = 32)
    imported = spokeshave.import_model(m, (torch.randn(3, 5, 48),),
                                       dynamic_shapes=({0: torch.export.Dim("b"),
                                                        1: torch.export.Dim("s")},))
    tri = spokeshave.compile_module(imported, pipeline=PIPELINES[kind], backend="triton")
    ref = spokeshave.compile_module(imported, pipeline=PIPELINES[kind], backend="reference")
    assert tri.target.arch == "interpreter"
    ops = {op.name for op in tri.module.entry.ops if op.name.startswith("spk.linear")}
    assert ops and {f"spk_gemm_{o.removeprefix('spk.linear_')}" for o in ops} <= \
        {k.name for k in tri.executable.kernels}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonBackendWarning)  # a fallback would hide a bug
        for shape in ((1, 1), (3, 5), (3, 11)):
            x = torch.randn(*shape, 48)
            got, want = tri(x), ref(x)
            tol = 0 if kind == "w8a8" else 2e-5  # int32 accumulation is exact
            assert (got - want).abs().max() <= tol * want.abs().max().clamp_min(1), (kind, shape)


def test_fp8_decode_covers_every_code(interpret):
    """All 256 e4m3 bytes through the kernel's bit arithmetic: one weight row per code."""
    from spokeshave.backends.triton.gemm import kernel_name
    from spokeshave.backends.triton.runtime import load_kernels, module_source

    kernels = load_kernels(module_source(["spk.linear_fp8"]))
    codes = torch.arange(256, dtype=torch.uint8).reshape(256, 1).repeat(1, 16)
    fp8 = codes.view(torch.float8_e4m3fn)
    x = torch.zeros(1, 16)
    x[0, 0] = 1.0
    y = torch.empty(1, 256)
    kernels.__dict__[kernel_name("spk.linear_fp8")][(1, 8)](
        x, codes, torch.ones(256), y, y, 1, 256, 16, 16, 256, HAS_BIAS=False, BM=16, BN=32, BK=16)
    want = fp8[:, 0].float()
    nan = want.isnan()
    assert torch.equal(y[0].isnan(), nan) and torch.equal(y[0][~nan], want[~nan])


def test_no_gpu_and_no_interpreter_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the triton backend fits")
    with pytest.raises(SpokeshaveError, match=r"needs an NVIDIA GPU .*TRITON_INTERPRET=1.*fits this machine: reference, cpu"):
        spokeshave.compile(_mlp(), (torch.randn(2, 48),), pipeline="quantize{scheme=w8}",
                           backend="triton")


def test_a_failing_kernel_falls_back_with_a_warning_naming_the_op(interpret, monkeypatch):
    m, x = _mlp(), torch.randn(4, 48)
    tri = spokeshave.compile(m, (x,), pipeline="quantize{scheme=w4g group=16}", backend="triton")
    ref = spokeshave.compile(m, (x,), pipeline="quantize{scheme=w4g group=16}")

    def broken(self, args):
        raise RuntimeError("PTX assembly failed (simulated)")

    monkeypatch.setattr(GemmCall, "__call__", broken)
    with pytest.warns(TritonBackendWarning, match=r"spk.linear_w4g.*PTX assembly failed.*reference path"):
        got = tri(x)
    assert torch.equal(got, ref(x))  # the reference path is the reference


def test_tiny_llama_runs_on_the_triton_backend(interpret):
    """A whole decoder (attention, RMSNorm, SiLU MLP) with int4 weights: the GEMMs are
    Triton kernels, the rest torch through the interpreter."""
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    from spokeshave.checkpoints import CausalLMLogits

    model = CausalLMLogits(transformers.LlamaForCausalLM(cfg)).eval()
    ids = torch.randint(0, 128, (2, 9))
    imported = spokeshave.import_model(model, (ids,))
    pipe = "quantize{scheme=w4g group=32}"
    tri = spokeshave.compile_module(imported, pipeline=pipe, backend="triton")
    ref = spokeshave.compile_module(imported, pipeline=pipe, backend="reference")
    assert sum(op.name == "spk.linear_w4g" for op in tri.module.entry.ops) == 2 * 7 + 1
    got, want = tri(ids), ref(ids)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_kernels_run_interpreted_after_triton_was_imported_for_the_gpu(tmp_path):
    """A process that imported triton without the interpreter (inductor does) and then sets
    TRITON_INTERPRET=1: the generated kernels use only builtins, none of triton.language's
    own @jit helpers, which were made in GPU mode."""
    import subprocess
    import sys

    script = (
        "import os, warnings, torch, triton.language\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        f"os.environ['SPOKESHAVE_TRITON_CACHE'] = {str(tmp_path)!r}\n"
        "import spokeshave\n"
        "from spokeshave.backends.triton.runtime import TritonBackendWarning\n"
        "warnings.simplefilter('error', TritonBackendWarning)\n"
        "m = torch.nn.Linear(48, 32)\n"
        "x = torch.randn(3, 48)\n"
        "for p in ('quantize{scheme=w8a8}', 'quantize{scheme=w4g group=16}'):\n"
        "    got = spokeshave.compile(m, (x,), pipeline=p, backend='triton')(x)\n"
        "    want = spokeshave.compile(m, (x,), pipeline=p)(x)\n"
        "    assert (got - want).abs().max() < 1e-5, p\n"
        "print('ok')\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]
