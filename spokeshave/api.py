"""The Python entry points: `compile`, `parse`, and the `CompiledModel` they produce.

`compile(model, example_inputs, pipeline=..., backend=..., calibration=...)` exports the
model, imports it, runs the pipeline (verifying after every pass) and hands the result to a
backend. The returned object is called like the model (same pytree inputs and outputs) and
exposes its IR (`.module`), weights (`.weights`) and what the pipeline did (`.stats`,
`.timings`).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .compiler.errors import SpokeshaveError
from .compiler.frontend import import_model
from .compiler.ir import Module
from .compiler.parser import parse_module
from .compiler.passmanager import PassContext, PassManager
from .compiler.report import QualityReport
from .compiler.weights import WeightStore

DEFAULT_PIPELINE = "canonicalize,cse,dce"


class CompiledModel:
    """A compiled model: call it like the original."""

    def __init__(self, module: Module, weights: WeightStore, backend: str, pipeline: str,
                 ctx: PassContext, in_spec: Any = None, out_spec: Any = None,
                 timings: list[tuple[str, float]] | None = None):
        from spokeshave.backends import get_backend

        self.module = module
        self.weights = weights
        self.backend = backend
        self.pipeline = pipeline
        self.context = ctx
        self.stats = {k: dict(v) for k, v in ctx.stats.items()}
        self.timings = timings or []
        self.in_spec, self.out_spec = in_spec, out_spec
        self._run = get_backend(backend).build(module, weights)
        self._reference: Callable[..., Any] | None = None  # the eager model, for the report
        self._calibration: list[tuple[tuple, dict]] | None = None
        self._report: QualityReport | None = None

    @property
    def report(self) -> QualityReport:
        """Per-layer compression entries and the end-to-end error on the calibration batches
        (measured on first access). `print(cm.report)`, `cm.report.save_plot("err.png")`."""
        if self._report is None:
            self._report = QualityReport.measure(self.context.report, self._calibration,
                                                 self._reference, self) if self._reference else \
                QualityReport(list(self.context.report))
        return self._report

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.in_spec is not None:
            flat, spec = torch.utils._pytree.tree_flatten((args, kwargs))
            if spec != self.in_spec:
                raise SpokeshaveError(f"called with inputs structured as {spec}, but the model was "
                                      f"compiled for {self.in_spec}")
        else:
            flat = list(args)
        outs = self._run(*flat)
        if self.out_spec is not None:
            return torch.utils._pytree.tree_unflatten(outs, self.out_spec)
        return outs[0] if len(outs) == 1 else tuple(outs)

    @property
    def ir(self) -> str:
        return str(self.module)


def compile(model: torch.nn.Module, example_inputs: tuple | list | torch.Tensor,
            pipeline: str = DEFAULT_PIPELINE, backend: str = "reference",
            calibration: list | None = None, example_kwargs: dict | None = None,
            dynamic_shapes: Any = None, verify: bool = True,
            print_ir_after_all: bool = False) -> CompiledModel:
    """Export, import, optimise and build `model`. `calibration` is a list of input batches
    (each a tuple of positional inputs) that compression passes measure statistics on."""
    from spokeshave.backends import get_backend

    get_backend(backend)  # fail on a bad backend name before the slow export
    pm = PassManager.parse(pipeline, verify=verify, print_ir_after_all=print_ir_after_all)
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    imported = import_model(model, tuple(example_inputs), example_kwargs, dynamic_shapes)
    batches = None if calibration is None else _flatten_calibration(calibration, imported.in_spec)
    ctx = PassContext(weights=imported.weights, calibration=batches)
    pm.run(imported.module, ctx)
    ctx.weights.forget_originals()  # float weights kept for `lorc` are not part of the model
    cm = CompiledModel(imported.module, ctx.weights, backend, pm.pipeline, ctx,
                       imported.in_spec, imported.out_spec, pm.timings)
    if calibration is not None:
        cm._reference = model
        cm._calibration = [_split_batch(b, i) for i, b in enumerate(calibration)]
    return cm


def _split_batch(batch: Any, i: int) -> tuple[tuple, dict]:
    """A calibration batch as (args, kwargs). A batch is a tensor, a tuple of positional
    inputs, a dict of keyword inputs, or an `(args, kwargs)` pair."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, dict):
        return (), batch
    if (isinstance(batch, (tuple, list)) and len(batch) == 2
            and isinstance(batch[0], (tuple, list)) and isinstance(batch[1], dict)):
        return tuple(batch[0]), batch[1]
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    raise SpokeshaveError(f"calibration batch {i} is a {type(batch).__name__}; expected a "
                          f"tensor, a tuple of positional inputs or a dict of keyword inputs")


def _flatten_calibration(calibration: list, in_spec: Any) -> list[list[Any]]:
    """Calibration batches as the compiled function's flat user inputs."""
    if isinstance(calibration, torch.Tensor) or not isinstance(calibration, (list, tuple)):
        raise SpokeshaveError("calibration must be a list of batches (each a tuple of the model's "
                              f"positional inputs), got {type(calibration).__name__}")
    out = []
    for i, batch in enumerate(calibration):
        flat, spec = torch.utils._pytree.tree_flatten(_split_batch(batch, i))
        if in_spec is not None and spec != in_spec:
            raise SpokeshaveError(f"calibration batch {i} is structured as {spec}, but the model "
                                  f"was compiled for inputs structured as {in_spec}")
        out.append(flat)
    return out


def parse(text: str, filename: str = "<string>") -> Module:
    """Parse IR text (MLIR generic syntax) into a `Module`."""
    return parse_module(text, filename)
