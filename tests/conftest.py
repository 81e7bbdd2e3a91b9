"""Shared pytest fixtures and the model-under-test machinery.

The real bundled models (all-MiniLM-L6-v2, SmolLM2-135M) load once per test session, and so
do their compiled forms: `compiled_cache` memoises compiles by key, so test_models.py and
test_torch_mlir.py share one export per (model, pipeline, shapes). `case` (indirectly
parametrized with a name from `models.ALL`) gives a `Case`: model, inputs, compiles, eager
outputs. SmolLM2's one export is shared by the pytest-xdist workers of a run through an
artifact in the run's temp folder (`run_tmp`). The worst compiled-vs-eager error per model is
printed at the end of the run.
Nothing is ever downloaded: the hub is switched off before transformers is imported.
"""
from __future__ import annotations

import hashlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # `import models` (tests/models.py) from tests and examples alike

import filelock  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import spokeshave  # noqa: E402
import spokeshave_models as models  # noqa: E402
from spokeshave.compiler.frontend import Imported  # noqa: E402


@pytest.fixture(scope="session")
def mlp_case():
    """(two-layer MLP, input, fp32 output, 16 calibration batches) with correlated,
    wide-ranging input channels: the compression tests' small model."""
    m = models.make_mlp()
    data = models.Correlated(128)
    x = data(32)
    cal = [(data(32),) for _ in range(16)]
    with torch.no_grad():
        ref = m(x)
    return m, x, ref, cal


@pytest.fixture(scope="session")
def mlp_compile(mlp_case) -> models.OneExport:
    """`spokeshave.compile(mlp, (x,), pipeline=..., calibration=...)` of `mlp_case`, on one
    export shared by every test that compiles it."""
    m, x, _, _ = mlp_case
    return models.OneExport(m, (x,))


@pytest.fixture(scope="session")
def minilm():
    """(BertModel all-MiniLM-L6-v2 in eval mode, tokenizer or None)."""
    try:
        return models.load_minilm()
    except RuntimeError as e:  # package missing: a broken install, not a test failure to hide
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def minilm_inputs(minilm):
    """(input_ids, attention_mask) of the eight bundled sentences, padded."""
    _, tokenizer = minilm
    return models.minilm_inputs(tokenizer)


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M as `forward(input_ids) -> logits` (f32, eval mode)."""
    try:
        return models.load_smollm2()
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def smollm2_inputs(smollm2):
    """One batch of 2 x 16 token ids (batch 2 so that batch can be marked dynamic)."""
    return (models.token_ids(2, 16, smollm2.lm.config.vocab_size, seed=0),)


class _CompiledCache:
    """`get(key, build)`: `build()` once per key per session (compiles are the slow part)."""

    def __init__(self):
        self._items: dict = {}

    def get(self, key, build):
        if key not in self._items:
            self._items[key] = build()
        return self._items[key]


@pytest.fixture(scope="session")
def run_tmp(tmp_path_factory) -> str:
    """A folder every pytest-xdist worker of this run shares (each worker's own base temp
    folder is a child of the run's); without xdist, this session's base temp folder."""
    base = tmp_path_factory.getbasetemp()
    return str(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)


@pytest.fixture(scope="session")
def compiled_cache():
    return _CompiledCache()


@pytest.fixture
def interpret(monkeypatch, tmp_path):
    """Triton kernels run on the CPU with Triton's interpreter, cached in this test's folder."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("SPOKESHAVE_TRITON_CACHE", str(tmp_path / "triton"))


@pytest.fixture(params=["cpu", "triton"])
def generated_backend(request) -> str:
    """Each backend that generates code (the triton one under its interpreter)."""
    if request.param == "triton":
        request.getfixturevalue("interpret")
    return request.param


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# ------------------------------------------------------------------ models under test


class Case:
    """A model under test (a name in `models.ALL`): the model, its example inputs, inputs of
    another batch size and length (`other`), and its compiled forms, cached per session."""

    def __init__(self, name: str, request, cache: _CompiledCache):
        self.name, self.cache, self.request = name, cache, request
        if name in models.RANDOM:
            self.model, self.inputs = cache.get(("model", name), lambda: models.RANDOM_MODELS[name]())
            self.other = models.RANDOM_MODELS[name](batch=3, seq=13, seed=1)[1]
        elif name == "minilm":
            self.model, tokenizer = request.getfixturevalue("minilm")
            self.inputs = request.getfixturevalue("minilm_inputs")
            # three sentences: a smaller batch, padded to another length
            self.other = models.minilm_inputs(tokenizer, models.SENTENCES[1:4])
        elif name == "smollm2":
            self.model = request.getfixturevalue("smollm2")
            self.inputs = request.getfixturevalue("smollm2_inputs")
            self.other = (models.token_ids(3, 11, self.model.lm.config.vocab_size, seed=1),)
        else:
            raise KeyError(name)
        assert [tuple(t.shape) for t in self.other] != [tuple(t.shape) for t in self.inputs]

    def compiled(self, pipeline: str, dynamic: bool = False) -> spokeshave.CompiledModel:
        """`spokeshave.compile(model, inputs, pipeline=...)`, once per session. Dynamic shapes
        export once per model, with pipeline "" (SmolLM2: the default pipeline; it is exported
        once only, 30-60 s on two cores); other pipelines compile that import again
        (`spokeshave.compile_module`, which is what `compile` does after its export)."""
        if self.name == "smollm2":
            dynamic = True
            assert pipeline != models.NONE, "SmolLM2 is exported once, with the default pipeline"
            if pipeline != models.DEFAULT:
                return self.cache.get((self.name, pipeline, True),
                                      lambda: self.recompiled(models.DEFAULT, pipeline))
        elif dynamic and pipeline != models.NONE:
            # dynamic exports are the slow ones: optimise a copy of the dynamic import
            return self.cache.get((self.name, pipeline, True),
                                  lambda: self.recompiled(models.NONE, pipeline))
        dyn = models.dynamic_dims(len(self.inputs), seq_max=128) if dynamic else None

        def build() -> spokeshave.CompiledModel:
            return spokeshave.compile(self.model, self.inputs, pipeline=pipeline, dynamic_shapes=dyn)
        if self.name == "smollm2":
            return self.cache.get((self.name, pipeline, dynamic),
                                  lambda: self._shared_between_workers(build, pipeline))
        return self.cache.get((self.name, pipeline, dynamic), build)

    def _shared_between_workers(self, build, pipeline: str) -> spokeshave.CompiledModel:
        """SmolLM2's export (~50 s alone, ~85 s beside another worker) once per test run, not
        once per pytest-xdist worker: the first worker to need it compiles it and saves it as
        an artifact in the run's shared temp folder, under a file lock; the others load that
        artifact (its IR text and weights, byte for byte what was compiled) and compile it
        with the same pipeline, which is what `compile` does after its export."""
        shared = self.request.getfixturevalue("run_tmp")
        key = hashlib.sha256(pipeline.encode()).hexdigest()[:12]  # one artifact per pipeline
        path = os.path.join(shared, f"{self.name}-{key}.spk")
        with filelock.FileLock(path + ".lock"):
            if not os.path.isfile(os.path.join(path, "manifest.json")):
                cm = build()
                spokeshave.save(cm, path)
                return cm
        loaded = spokeshave.load(path, backend="reference")
        return spokeshave.compile_module(
            Imported(loaded.module, loaded.weights, loaded.in_spec, loaded.out_spec), pipeline=pipeline)

    @staticmethod
    def record_error(label: str, err: float) -> None:
        record_error(label, err)

    def recompiled(self, base: str, pipeline: str) -> spokeshave.CompiledModel:
        """The dynamic-shape compile with pipeline `base`, compiled again with `pipeline`."""
        first = self.compiled(base, dynamic=True)
        return spokeshave.compile_module(
            Imported(first.module, first.weights, first.in_spec, first.out_spec), pipeline=pipeline)

    def eager(self, inputs: tuple):
        """The eager model's output on `inputs` (cached by the inputs' contents)."""
        key = ("eager", self.name,
               tuple((tuple(t.shape), hash(t.numpy().tobytes())) for t in inputs))

        def run():
            with torch.no_grad():
                return self.model(*inputs)
        return self.cache.get(key, run)


@pytest.fixture(scope="session")
def cases(request, compiled_cache):
    """`cases(name)`: the `Case` of a model in `models.ALL`, sharing the session's compiles."""
    return lambda name: Case(name, request, compiled_cache)


@pytest.fixture
def case(request, compiled_cache) -> Case:
    """Indirectly parametrized with a model name: `@pytest.mark.parametrize("case", [...], indirect=True)`."""
    return Case(request.param, request, compiled_cache)


# ------------------------------------------------------------------ reporting

_ERRORS: dict[str, float] = {}


def record_error(label: str, err: float) -> None:
    """Remember the worst compiled-vs-eager relative error per label for the summary."""
    _ERRORS[label] = max(_ERRORS.get(label, 0.0), err)


def pytest_sessionfinish(session):
    """Under pytest-xdist each worker hands its errors to the controller, which prints them."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["spokeshave_errors"] = dict(_ERRORS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for label, err in getattr(node, "workeroutput", {}).get("spokeshave_errors", {}).items():
        record_error(label, err)


def pytest_terminal_summary(terminalreporter):
    if _ERRORS:
        terminalreporter.section("compiled vs eager: max |a-b| / max |b|")
        for label in sorted(_ERRORS):
            terminalreporter.write_line(f"  {label:<40} {_ERRORS[label]:.2e}")
