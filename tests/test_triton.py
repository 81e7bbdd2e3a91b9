"""The Triton backend under `TRITON_INTERPRET=1` (no GPU here or in CI): every compressed
GEMM against the reference backend's emulation of the same compressed model, at sizes that
exercise the masks; the clear error without a GPU; the fallback of a failing kernel."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
import triton
from torch.export import Dim

import spokeshave
import spokeshave_models as models
from spokeshave.backends.triton import launch
from spokeshave.backends.triton.runtime import TritonBackendWarning
from spokeshave.compiler.errors import SpokeshaveError


def _mlp(k_in=48, hidden=32, n_out=19, bias=True):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(k_in, hidden, bias=bias), torch.nn.GELU(),
                               torch.nn.Linear(hidden, n_out, bias=bias))


@functools.lru_cache(maxsize=None)
def _dynamic_import(model: str, bias: bool) -> models.OneExport:
    """`_mlp(bias)` with dynamic (batch, seq) dims, or one `Linear(48, 19)` with dynamic
    rows, exported once for every pipeline, tile choice and backend its tests compile
    (the export is most of a case's time)."""
    if model == "mlp":
        m, example, dims = _mlp(bias=bias), torch.randn(3, 5, 48), {0: Dim("b"), 1: Dim("s")}
    else:
        torch.manual_seed(0)
        m, example, dims = torch.nn.Linear(48, 19, bias=bias), torch.randn(3, 48), {0: Dim("b")}
    return models.OneExport(m, (example,), dynamic_shapes=(dims,))


PIPELINES = {
    "w8": "quantize{scheme=w8}",
    "w8a8": "quantize{scheme=w8a8}",
    "fp8": "quantize{scheme=fp8}",
    "w4g": "quantize{scheme=w4g group=16}",
    "w4g-zeros": "quantize{scheme=w4g group=16 symmetric=false}",
    "sparse24": "sparsify{method=magnitude}",
}


FORCED_TILES = {
    "small-tiles": launch.LaunchConfig(16, 32, 16),
    # K = 48 in three one-step slices; K = 32 in two, and a third empty slice (a zero partial)
    "split-k": launch.LaunchConfig(16, 32, 16, split_k=3),
}


@pytest.fixture(params=["ranked", *FORCED_TILES])
def tiles(request, monkeypatch):
    """The tuner's own choice (under the interpreter: the biggest tiles, one per GEMM here),
    or only 16 x 32 x 16 tiles, so M, N and K each span several tiles and a masked tail, or
    those split along K (split-K's partial tiles and their in-order sum)."""
    if request.param in FORCED_TILES:
        monkeypatch.setattr(launch, "gemm_candidates", lambda m, target: [FORCED_TILES[request.param]])
    return request.param


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_each_compressed_gemm_matches_the_reference(interpret, tiles, kind, bias):
    # rows: 1 (decode), 15 (under one 16-row tile), 33 (three 16-row tiles, the last
    # masked); N = 32 and 19 (a masked column tile), K = 48 and 32 (three and two K steps)
    compile_ = _dynamic_import("mlp", bias)
    torch.manual_seed(0)  # the inputs below do not depend on whether the export was cached
    tri = compile_(PIPELINES[kind], backend="triton")
    ref = compile_(PIPELINES[kind], backend="reference")
    assert tri.target.arch == "interpreter"
    ops = {op.name for op in tri.module.entry.ops if op.name.startswith("spk.linear")}
    names = {k.name for k in tri.executable.kernels}
    assert ops and all(any(n.startswith(f"spk_gemm_{o.removeprefix('spk.linear_')}_") for n in names)
                       for o in ops)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonBackendWarning)  # a fallback would hide a bug
        for shape in ((1, 1), (3, 5), (3, 11)):
            x = torch.randn(*shape, 48)
            got, want = tri(x), ref(x)
            # the GELU between the GEMMs is a generated row kernel (tl.erf, not torch's), so
            # even w8a8 is held to the float tolerance here; its GEMM alone is exact (below)
            assert (got - want).abs().max() <= 2e-5 * want.abs().max().clamp_min(1), (kind, shape)


def test_kernels_call_only_triton_language_builtins():
    """`triton.language.standard`'s helpers (`tl.cdiv`, `tl.zeros`, ...) are `@triton.jit`
    functions made once, in the mode of triton's first import: after inductor has imported
    triton for a GPU, an interpreted kernel that calls one fails. Every generated GEMM (each
    format, each activation type) and the row kernels' helpers call builtins only."""
    import re

    import triton.language as tl

    from spokeshave.backends.triton.gemm import FORMATS, HEADER, kernel_source
    from spokeshave.backends.triton.rows import HELPERS

    sources = [HEADER, HELPERS] + [kernel_source(op, dtype=dt) for op in FORMATS for dt in ("f32", "f16", "bf16")]
    called = {name for text in sources for name in re.findall(r"\btl\.(\w+)", text)}
    jitted = sorted(n for n in called if isinstance(getattr(tl, n, None), triton.JITFunction))
    assert not jitted, jitted


@pytest.mark.parametrize("bias", [True, False])
def test_the_w8a8_gemm_is_bit_exact(interpret, tiles, bias):
    """int8 x int8 into int32 is exact (split-K's int32 partials too), and the rescale rounds
    as the reference does."""
    compile_ = _dynamic_import("linear", bias)
    torch.manual_seed(0)  # the inputs below do not depend on whether the export was cached
    tri = compile_("quantize{scheme=w8a8}", backend="triton")
    ref = compile_("quantize{scheme=w8a8}", backend="reference")
    for rows in (1, 15, 33):
        x = torch.randn(rows, 48)
        assert torch.equal(tri(x), ref(x)), rows


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
        x, codes, torch.ones(256), y, y, y, y, 1, 256, 16, 16, 256, HAS_BIAS=False, BM=16, BN=32, BK=16,
        SPLIT_K=1)
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


def test_a_failing_kernel_falls_back_with_a_warning_naming_the_group(interpret, monkeypatch):
    m, x = _mlp(), torch.randn(4, 48)
    tri = spokeshave.compile(m, (x,), pipeline="quantize{scheme=w4g group=16}", backend="triton")
    ref = spokeshave.compile(m, (x,), pipeline="quantize{scheme=w4g group=16}")

    def broken(*args):
        raise RuntimeError("PTX assembly failed (simulated)")

    monkeypatch.setattr(launch.LaunchTuner, "choose", broken)  # fails inside the GEMM's launch
    with pytest.warns(TritonBackendWarning, match=r"spk.linear_w4g.*PTX assembly failed.*reference path"):
        got = tri(x)
    failed = tri.executable.failed
    assert failed and all("spk.linear_w4g" in name for name in failed)  # the GELU's kernel ran
    want = ref(x)
    assert (got - want).abs().max() <= 2e-5 * want.abs().max()


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


def test_the_prologue_quantizes_rows_bit_for_bit(interpret):
    """A row kernel's int8 rows and scales equal `quantize_per_token_int8` exactly, ties at
    half a code (round half to even) and an all-zero row included."""
    from spokeshave.backends.triton.gemm import HEADER
    from spokeshave.backends.triton.rows import HELPERS, generate
    from spokeshave.backends.triton.runtime import load_kernels
    from spokeshave.compiler.numerics.quant import quantize_per_token_int8

    text = """func.func @f(%x: tensor<?x40xf32>) -> tensor<?x40xf32> {
  %0 = "aten.relu"(%x) : (tensor<?x40xf32>) -> tensor<?x40xf32>
  return %0 : tensor<?x40xf32>
}"""
    op = spokeshave.parse(text).entry.body.ops[0]
    kernel = generate([op], list(op.operands), [], {op.result: ("", 40)})
    kernel.fn = getattr(load_kernels(HEADER + HELPERS + kernel.source), kernel.symbol)
    x = torch.randn(7, 40) * 3
    x[0, :3] = torch.tensor([127.0, 0.5, 1.5])  # scale 1: codes 0.5 and 1.5 are ties
    x[1] = 0.0
    q, s = kernel.run([x])
    want_q, want_s = quantize_per_token_int8(torch.relu(x))
    assert torch.equal(q, want_q) and torch.equal(s, want_s.reshape(-1))
    assert q[0, :3].tolist() == [127, 0, 2]  # half to even


def test_launch_configurations_are_ranked_by_the_cost_model():
    """The roofline's tiled term: under the interpreter the fewest tile steps win (the
    biggest tiles); on an H100-sized GPU a memory-bound decode GEMM takes 16-row tiles (no
    padded rows) and the narrowest column tiles (the weight streamed by the most SMs)."""
    from spokeshave.compiler.target import Target

    text = """func.func @f(%x: tensor<?x4096xf32>, %q: tensor<4096x4096xi8> {spk.param = "q"}, %s: tensor<4096xf32> {spk.param = "s"}) -> tensor<?x4096xf32> {
  %0 = "spk.linear_w8"(%x, %q, %s) : (tensor<?x4096xf32>, tensor<4096x4096xi8>, tensor<4096xf32>) -> tensor<?x4096xf32>
  return %0 : tensor<?x4096xf32>
}"""
    op = spokeshave.parse(text).entry.body.ops[0]
    interp = Target(device="cuda", arch="interpreter")
    best = launch.rank([op], 64, interp)[0]
    assert (best.block_m, best.block_n, best.block_k) == (64, 128, 64)
    gpu = Target.parse("cuda:sm_90:sms=132")
    decode = launch.rank([op], 1, gpu)[0]
    assert (decode.block_m, decode.block_n) == (16, 32), decode
    # 16 rows of a long K (4096 x 14336): 128-wide column tiles leave 32 programs for 132
    # SMs, so the model splits K; a 256-row prefill fills the SMs without a split
    long_k = spokeshave.parse(text.replace("4096x4096xi8", "4096x14336xi8")
                              .replace("?x4096xf32>, %q", "?x14336xf32>, %q")
                              .replace("(tensor<?x4096xf32>, tensor", "(tensor<?x14336xf32>, tensor")
                              ).entry.body.ops[0]
    short = launch.rank([long_k], 16, gpu)[0]
    assert short.split_k > 1 and short.block_n == 128, short
    assert launch.rank([long_k], 256, gpu)[0].split_k == 1
    assert launch.rank([long_k], 16, interp)[0].split_k == 1  # the interpreter counts tile steps


@pytest.mark.parametrize("library", ["faster", "slower", "fails"])
def test_a_2_4_gemm_keeps_torchs_semi_structured_kernel_when_it_times_faster(
        interpret, tmp_path, monkeypatch, library):
    """On a GPU the tuner times a 2:4 GEMM with no epilogue against torch's semi-structured
    kernels and keeps the faster. Here (no GPU) the timing is faked: `do_bench` runs the call
    once and reports a set time, and torch's semi-structured weight (CUDA only) is stood in
    for by the dense weight it would hold, so the plumbing (choose, cache, run) is real."""
    import json

    import triton.testing

    from spokeshave.backends.triton import lowering
    from spokeshave.compiler.numerics.sparse import decompress_24

    init = launch.LaunchTuner.__init__

    def timed_init(self, *a, **kw):
        init(self, *a, **kw)
        self.timed = True
    monkeypatch.setattr(launch.LaunchTuner, "__init__", timed_init)
    fake_times = {"faster": 0.5, "slower": 2.0}

    def dense(kernel, box):
        if library == "fails":
            raise RuntimeError("no semi-structured kernel for this device")
        return decompress_24(*kernel.weights[:2])
    monkeypatch.setattr(lowering, "_semi_structured", dense)
    calls = []

    def do_bench(fn, warmup=0, rep=0):
        calls.append(fn)
        fn()  # the library call raises here when it "fails"
        is_library = "_semi_structured" in fn.__code__.co_names
        return fake_times.get(library, 1.0) if is_library else 1.0  # every kernel config: 1.0
    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    torch.manual_seed(0)
    m = torch.nn.Linear(64, 32)
    x = torch.randn(5, 64)
    tri = spokeshave.compile(m, (x,), pipeline="sparsify{method=magnitude}", backend="triton")
    ref = spokeshave.compile(m, (x,), pipeline="sparsify{method=magnitude}", backend="reference")
    got = tri(x)
    assert (got - ref(x)).abs().max() <= 2e-5 * ref(x).abs().max()
    (table,) = (tmp_path / "triton").glob("*.launch.json")
    (chosen,) = json.loads(table.read_text())["cuda.interpreter.nofeatures"].values()
    assert chosen["library"] == ("torch-2:4" if library == "faster" else ""), chosen
    assert len(calls) > 1  # kernel configurations and the library call were timed


def test_chosen_launch_configurations_are_cached_beside_the_kernels(interpret, tmp_path):
    m, x = _mlp(), torch.randn(4, 48)
    spokeshave.compile(m, (x,), pipeline="quantize{scheme=w4g group=16}", backend="triton")(x)
    (table,) = (tmp_path / "triton").glob("*.launch.json")
    import json

    chosen = json.loads(table.read_text())["cuda.interpreter.nofeatures"]
    assert any(k.startswith("spk_gemm_w4g_") and k.endswith(":m16") for k in chosen), chosen


class _Block(torch.nn.Module):
    """LayerNorm -> linear -> GELU -> linear -> residual add: rows, gemm and epilogue steps."""

    def __init__(self):
        super().__init__()
        self.ln, self.a, self.b = torch.nn.LayerNorm(64), torch.nn.Linear(64, 48), torch.nn.Linear(48, 64)

    def forward(self, x):
        return x + self.b(torch.nn.functional.gelu(self.a(self.ln(x))))


@pytest.mark.parametrize("pipeline", ["fuse", "quantize{scheme=w8a8},fuse",
                                      "quantize{scheme=w4g group=16},fuse", "quantize{scheme=w8},fuse",
                                      "quantize{scheme=fp8},fuse", "sparsify{method=magnitude},fuse"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_16_bit_activations_stay_16_bit(interpret, dtype, pipeline):
    from spokeshave.compiler.ir import dtype_name

    """A bf16 / f16 model runs in its own type: kernels load it, compute in float32 (the
    GEMMs take it into `tl.dot` as it is) and store it. Tolerance: 2 eps of the type at
    the output's scale, since the reference rounds to the type after every op and the
    kernels only at each stored value (measured: 0.59 eps bf16, 0.56 eps f16)."""
    torch.manual_seed(0)
    m, x = _Block().to(dtype), torch.randn(2, 7, 64, dtype=dtype)
    imported = spokeshave.import_model(m, (x,))
    tri = spokeshave.compile_module(imported, pipeline=pipeline, backend="triton")
    ref = spokeshave.compile_module(imported, pipeline=pipeline, backend="reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonBackendWarning)
        got = tri(x)
    want = ref(x)
    assert got.dtype == dtype and tri.report.activations == dtype_name(dtype)  # "bf16", "f16"
    assert "activations: " + tri.report.activations in str(tri.report)
    assert {k.name.split("_")[1] for k in tri.executable.kernels if k.name.startswith("spk_")} == {"gemm", "rows"}
    err = (got.float() - want.float()).abs().max()
    assert err <= 2 * torch.finfo(dtype).eps * want.float().abs().max(), err


@pytest.mark.parametrize("scheme", ["w8a8", "w8"])
def test_llm_int8_split_gemms(interpret, tiles, scheme):
    """`outlier-split`: the int8 part on x with its outlier columns zeroed, their float
    GEMM (MO = 3 columns: a masked 16-wide tile) added before the bias, in one kernel."""
    torch.manual_seed(0)
    m = torch.nn.Linear(48, 19)

    def data(rows):
        x = torch.randn(rows, 48)
        x[:, [3, 17, 40]] *= 30
        return x
    imported = spokeshave.import_model(m, (data(3),), dynamic_shapes=({0: torch.export.Dim("b")},))
    pipe = f"outlier-split{{threshold=6.0 scheme={scheme}}}"
    cal = [(data(8),)]
    tri = spokeshave.compile_module(imported, pipeline=pipe, backend="triton", calibration=cal)
    ref = spokeshave.compile_module(imported, pipeline=pipe, backend="reference", calibration=cal)
    (op,) = [o for o in tri.module.entry.ops if o.name.startswith("spk.linear")]
    assert op.name == f"spk.linear_{scheme}_split"
    assert any(k.name.startswith(f"spk_gemm_{scheme}_split_") for k in tri.executable.kernels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TritonBackendWarning)
        for rows in (1, 15, 33):
            x = data(rows)
            got, want = tri(x), ref(x)
            assert (got - want).abs().max() <= 2e-5 * want.abs().max(), rows
