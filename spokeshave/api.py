"""The Python entry points: `compile`, `compile_module`, `import_model`, `parse`, and the
`CompiledModel` they produce.

`compile(model, example_inputs, pipeline=..., backend=..., calibration=...)` exports the
model, imports it and hands it to `compile_module`, which runs the pipeline (verifying after
every pass) on a copy of the IR and weights and gives the result to a backend. The returned
object is called like the model (same pytree inputs and outputs) and exposes its IR
(`.module`), weights (`.weights`), what the backend generated (`.executable`), and what the
pipeline did (`.report`, `.stats`, `.timings`).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .compiler.backend import BACKENDS, Backend, Executable
from .compiler.errors import SpokeshaveError
from .compiler.frontend import Imported
from .compiler.frontend import import_model as _import_model
from .compiler.ir import Module, TensorType, torch_dtype
from .compiler.parser import parse_module
from .compiler.passmanager import PassContext, PassManager
from .compiler.report import QualityReport
from .compiler.signature import InputSpec, check_inputs, specs_from_function
from .compiler.target import Target
from .compiler.weights import WeightStore
from .costmodel.roofline import RooflineCostModel


class CompiledModel:
    """A compiled model: call it like the original."""

    def __init__(self, module: Module, weights: WeightStore, executable: Executable,
                 backend: str, pipeline: str, ctx: PassContext, in_spec: Any = None,
                 out_spec: Any = None, timings: list[tuple[str, float]] | None = None,
                 reference: Callable[..., Any] | None = None,
                 calibration: list[tuple[tuple, dict]] | None = None,
                 inputs: list[InputSpec] | None = None):
        self.module = module
        self.weights = weights
        self.executable = executable
        self.backend = backend
        self.pipeline = pipeline
        self.context = ctx
        self.target = ctx.target
        self.stats = {k: dict(v) for k, v in ctx.stats.items()}
        self.timings = timings or []
        self.in_spec, self.out_spec = in_spec, out_spec
        self._reference = reference  # the eager model, for the report's end-to-end error
        self._calibration = calibration
        self._report: QualityReport | None = None
        # what a call may pass: checked on every call, so a shape outside the compiled
        # range fails with the input and the bound, not deep inside a kernel
        self.inputs = inputs if inputs is not None else specs_from_function(module.entry)

    @property
    def report(self) -> QualityReport:
        """Per-layer compression entries and the end-to-end error on the calibration batches
        (measured on first access). `print(cm.report)`, `cm.report.save_plot("err.png")`."""
        if self._report is None:
            f = self.module.entry
            floats = sorted({v.type.dtype for v in (*f.user_inputs(), *f.return_op.operands)
                             if isinstance(v.type, TensorType) and torch_dtype(v.type.dtype).is_floating_point})
            activations = ", ".join(floats)
            if self._reference is not None and self._calibration:
                self._report = QualityReport.measure(self.context.report, self._calibration,
                                                     self._reference, self, activations)
            else:
                self._report = QualityReport(list(self.context.report), activations=activations)
        return self._report

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.in_spec is not None:
            flat, spec = torch.utils._pytree.tree_flatten((args, kwargs))
            if spec != self.in_spec:
                raise SpokeshaveError(f"called with inputs structured as {spec}, but the model was "
                                      f"compiled for {self.in_spec}")
        else:
            if kwargs:
                raise SpokeshaveError("this model was compiled from IR: call it with its inputs "
                                      "as positional arguments")
            flat = list(args)
        check_inputs(flat, self.inputs, "call")
        outs = self.executable(*flat)
        if self.out_spec is not None:
            return torch.utils._pytree.tree_unflatten(outs, self.out_spec)
        return outs[0] if len(outs) == 1 else tuple(outs)

    @property
    def ir(self) -> str:
        return str(self.module)


def import_model(model: torch.nn.Module, example_inputs: tuple | list | torch.Tensor,
                 example_kwargs: dict | None = None, dynamic_shapes: Any = None,
                 stamp_layers: bool = True) -> Imported:
    """Export `model` with torch.export and import it: IR, weights and calling convention.
    Export once, then `compile_module(imported, ...)` with as many pipelines as you like.
    A stack of 12 or more alike layers is exported cut to 4 and stamped to its depth, checked
    to be the whole export (`imported.notes` says so); `stamp_layers=False` exports it whole."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    return _import_model(model, tuple(example_inputs), example_kwargs, dynamic_shapes,
                         stamp_layers=stamp_layers)


def compile(model: torch.nn.Module, example_inputs: tuple | list | torch.Tensor,
            pipeline: str | None = None, backend: str = "reference",
            calibration: list | None = None, example_kwargs: dict | None = None,
            dynamic_shapes: Any = None, verify: bool = True, print_ir_after_all: bool = False,
            target: Target | str | None = None, cost_model: Any = None,
            stamp_layers: bool = True) -> CompiledModel:
    """Export, import, optimise and build `model`. `pipeline` defaults to the backend's own;
    `calibration` is a list of input batches (each a tuple of positional inputs, a dict of
    keyword inputs, or an `(args, kwargs)` pair) that compression passes measure statistics
    on; `target` (a `Target`, or text such as "cpu:x86_64:avx2,fma") defaults to this machine;
    `stamp_layers` as for `import_model`."""
    chosen, tgt, pm = _plan(backend, target, pipeline)  # bad options fail before the slow export
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    split = None if calibration is None else _split_calibration(calibration)
    imported = _import_model(model, tuple(example_inputs), example_kwargs, dynamic_shapes,
                             calibration=split, stamp_layers=stamp_layers)
    return _compile(imported.module, imported.weights, pm, chosen, tgt, split,
                    imported.in_spec, imported.out_spec, model, cost_model, verify,
                    print_ir_after_all, imported.inputs)


def compile_module(module: Module | Imported, weights: WeightStore | None = None,
                   pipeline: str | None = None, backend: str = "reference",
                   calibration: list | None = None, *, reference: Callable[..., Any] | None = None,
                   target: Target | str | None = None, cost_model: Any = None,
                   verify: bool = True, print_ir_after_all: bool = False,
                   progress: Callable[[str, int, int, str], None] | None = None) -> CompiledModel:
    """Compile IR that is already imported: a `Module` with its `weights`, or what
    `import_model` returned (then called like the model). Works on copies: the module and
    weight store passed in are left as they are. `reference`, the eager model, lets the
    report measure the end-to-end error on the calibration batches. `progress(pass, done,
    total, layer)` is told as long passes finish each layer."""
    in_spec = out_spec = inputs = None
    if isinstance(module, Imported):
        if weights is not None:
            raise SpokeshaveError("compile_module: an imported model brings its own weights; "
                                  "do not pass weights= too")
        module, weights, in_spec, out_spec, inputs = (module.module, module.weights, module.in_spec,
                                                      module.out_spec, module.inputs)
    if weights is None:
        raise SpokeshaveError("compile_module: pass the module's weights (a WeightStore)")
    chosen, tgt, pm = _plan(backend, target, pipeline)
    split = None if calibration is None else _split_calibration(calibration)
    return _compile(module.clone(), WeightStore(dict(weights.items())), pm, chosen, tgt,
                    split, in_spec, out_spec, reference, cost_model, verify,
                    print_ir_after_all, inputs, progress)


def _compile(module: Module, weights: WeightStore, pm: PassManager, backend: Backend,
             target: Target, split: list[tuple[tuple, dict]] | None, in_spec: Any, out_spec: Any,
             reference: Callable[..., Any] | None, cost_model: Any, verify: bool,
             print_ir_after_all: bool, inputs: list[InputSpec] | None,
             progress: Callable[[str, int, int, str], None] | None = None) -> CompiledModel:
    """Run the pipeline on `module` (owned: it is changed) and build it. `split`: the
    calibration batches as (args, kwargs) pairs."""
    pm.verify, pm.print_ir_after_all = verify, print_ir_after_all
    inputs = inputs if inputs is not None else specs_from_function(module.entry)
    batches = None if split is None else _flatten_calibration(split, in_spec)
    for i, b in enumerate(batches or []):
        check_inputs(b, inputs, f"calibration batch {i}")
    ctx = PassContext(weights=weights, calibration=batches, target=target,
                      cost_model=cost_model if cost_model is not None else RooflineCostModel(),
                      progress=progress)
    pm.run(module, ctx)
    ctx.weights.forget_originals()  # float weights kept for `lorc` are not part of the model
    executable = backend.build(module, ctx.weights, target)
    return CompiledModel(module, ctx.weights, executable, backend.name, pm.pipeline, ctx,
                         in_spec, out_spec, pm.timings, reference, split, inputs)


def _plan(backend: str, target: Target | str | None, pipeline: str | None
          ) -> tuple[Backend, Target, PassManager]:
    """The backend, the target it must fit and the pipeline (default: the backend's)."""
    chosen = BACKENDS[backend]
    return (chosen, _target(target, chosen),
            PassManager.parse(chosen.default_pipeline if pipeline is None else pipeline))


def _target(target: Target | str | None, backend: Backend) -> Target:
    if target is None and backend.default_target is not None:
        t = backend.default_target()
    elif target is None:
        t = Target.cuda() if backend.device == "cuda" else Target.host()
    elif isinstance(target, str):
        t = Target.parse(target)
    elif isinstance(target, Target):
        t = target
    else:
        raise SpokeshaveError(f"target must be a Target or its text (e.g. \"cpu:x86_64:avx2,fma\"), "
                              f"got {type(target).__name__}")
    backend.check(t)
    return t


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


def _split_calibration(calibration: Any) -> list[tuple[tuple, dict]]:
    """The calibration batches as (args, kwargs) pairs."""
    if isinstance(calibration, torch.Tensor) or not isinstance(calibration, (list, tuple)):
        raise SpokeshaveError("calibration must be a list of batches (each a tuple of the model's "
                              f"positional inputs), got {type(calibration).__name__}")
    return [_split_batch(b, i) for i, b in enumerate(calibration)]


def _flatten_calibration(batches: list[tuple[tuple, dict]], in_spec: Any) -> list[list[Any]]:
    """(args, kwargs) calibration batches as the compiled function's flat user inputs."""
    out = []
    for i, (args, kwargs) in enumerate(batches):
        if in_spec is None:
            if kwargs:
                raise SpokeshaveError(f"calibration batch {i} has keyword inputs, but IR compiled "
                                      f"with compile_module takes positional inputs only")
            out.append(list(args))
            continue
        flat, spec = torch.utils._pytree.tree_flatten((args, kwargs))
        if spec != in_spec:
            raise SpokeshaveError(f"calibration batch {i} is structured as {spec}, but the model "
                                  f"was compiled for inputs structured as {in_spec}")
        out.append(flat)
    return out


def parse(text: str, filename: str = "<string>") -> Module:
    """Parse IR text (MLIR generic syntax) into a `Module`."""
    return parse_module(text, filename)
