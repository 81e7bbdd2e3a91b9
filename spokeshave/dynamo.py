"""`torch.compile(model, backend="spokeshave", options={...})`: the Dynamo backend.

Registered through the `torch_dynamo_backends` entry point, so user code imports nothing of
ours. Dynamo hands over one FX graph per captured region (graph breaks give several); each
compiles on its own and is listed in `graphs()`.

How a captured graph becomes IR: Dynamo lifts the model's parameters and buffers to graph
inputs. `_Captured` puts them back as the parameters and buffers of a module (under their
own names, `encoder.layer.0.attention.self.query.weight`, read off Dynamo's sources) and
takes only the user's tensors; the sizes Dynamo passes as SymInt inputs are read off those
tensors. That module goes through the same export frontend as `spokeshave.compile`: the same
decomposition table (linear, layer_norm, sdpa... stay whole) and the same importer, so
nothing about the FX -> IR import is written twice.

Sizes: a graph Dynamo traced with symbolic sizes compiles once for all of them (each
symbolic dim is exported as `Dim.AUTO`, so it stays dynamic unless the model pins it). By
default Dynamo traces a frame with the sizes of its first call, and traces it again with
symbolic sizes when a size first changes ("automatic dynamic"); inductor compiles both. Here
a graph with static sizes runs as captured on its first call and compiles on its second:
if the sizes change, Dynamo's symbolic retrace takes every later call and the static graph
is never compiled. So any number of sizes costs one compile, and a fixed-size workload pays
one uncompiled call. `torch.compile(..., dynamic=True)` traces symbolically from the start.

Options: `pipeline` (default: the backend's), `backend` (`cpu` | `reference` | ...; default
the best that fits this machine), `calibration` (N: the first N calls run the captured graph
as it is, their inputs are recorded, and the model is compiled on them; a pipeline with
calibrated passes needs N >= 1), `verify` (run the verifier after every pass, default True).

Inference only: a graph called with grad enabled on inputs that require grad (a training
step) goes to inductor, with a one-line note.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .compiler.backend import BACKENDS
from .compiler.errors import SpokeshaveError
from .compiler.target import Target

OPTIONS = {"pipeline": "pass pipeline text (default: the backend's own)",
           "backend": "cpu | reference | ... (default: the best that fits this machine)",
           "calibration": "N: compile after N calls, calibrated on their inputs (default 0)",
           "verify": "run the verifier after every pass (default True)"}
_PREFERENCE = ("cpu", "reference")  # the best first; the first that fits the target wins


class SpokeshaveDynamoWarning(UserWarning):
    pass


@dataclass
class GraphRecord:
    """One graph Dynamo captured, and what became of it."""

    index: int
    user_inputs: list[str]
    weights: int
    status: str = "waiting"     # waiting (runs as captured) | compiled | inductor
    compiled: Any = None        # the CompiledModel
    note: str = ""

    def __str__(self) -> str:
        return (f"graph {self.index}: {self.status}, {len(self.user_inputs)} inputs "
                f"({', '.join(self.user_inputs)}), {self.weights} weights"
                f"{'; ' + self.note if self.note else ''}")


_GRAPHS: list[GraphRecord] = []


def graphs() -> list[GraphRecord]:
    """The graphs captured in this process, in order (graph breaks give several per model)."""
    return list(_GRAPHS)


def report() -> str:
    return "\n".join(str(g) for g in _GRAPHS) or "no graph captured"


def backend(gm: torch.fx.GraphModule, example_inputs: list[Any],
            options: dict[str, Any] | None = None) -> Callable[..., Any]:
    """The Dynamo backend: a captured graph and its example inputs -> a callable."""
    opts = _options(options)
    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad
                                       for x in example_inputs):
        warnings.warn("spokeshave compiles inference graphs; this one needs a backward, so it "
                      "goes to inductor (call the model under torch.no_grad() or "
                      "torch.inference_mode() to compile it)", SpokeshaveDynamoWarning, stacklevel=2)
        from torch._dynamo.backends.registry import lookup_backend

        _GRAPHS.append(GraphRecord(len(_GRAPHS), [], 0, "inductor", note="needs a backward"))
        return lookup_backend("inductor")(gm, example_inputs)
    slots = _slots(gm, example_inputs)
    record = GraphRecord(len(_GRAPHS), [s.name for s in slots if s.kind == "user"],
                         sum(s.kind == "weight" for s in slots))
    _GRAPHS.append(record)
    state = _Graph(opts, record, wait=0 if any(_symbolic_dims(gm, slots)) else 1)
    user = [i for i, s in enumerate(slots) if s.kind == "user"]

    def run(*args: Any) -> Any:
        inputs = [args[i] for i in user]
        compiled = state.compiled
        if compiled is None:
            compiled = state.record(gm, slots, args, inputs)
            if compiled is None:
                return gm(*args)
        return compiled(*inputs)

    return run


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        valid = "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
        raise SpokeshaveError(f"torch.compile(backend=\"spokeshave\"): unknown option(s) "
                              f"{', '.join(map(repr, unknown))}; valid options are {valid}")
    n = opts.setdefault("calibration", 0)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise SpokeshaveError(f"torch.compile(backend=\"spokeshave\"): option calibration must be "
                              f"a number of calls (an int >= 0), got {n!r}")
    if "backend" not in opts:
        host = Target.host()
        opts["backend"] = next(b for b in _PREFERENCE if b in BACKENDS
                               and BACKENDS[b].misfit(host) is None)
    elif opts["backend"] not in BACKENDS:
        raise SpokeshaveError(f"torch.compile(backend=\"spokeshave\"): option backend="
                              f"{opts['backend']!r} is not a backend; choose one of "
                              f"{', '.join(sorted(BACKENDS))}")
    opts.setdefault("verify", True)
    return opts


@dataclass(frozen=True)
class _Slot:
    """What one graph input is: a user tensor, a weight (its name), a constant of the model,
    or a size of a user tensor (`of`: the input index, `dim`)."""

    kind: str
    name: str
    of: int = -1
    dim: int = -1


_KEY = re.compile(r"\['([^']*)'\]|\[(\d+)\]")


def _weight_name(source: str) -> str | None:
    """`L['self']._modules['encoder']._parameters['weight']` -> `encoder.weight`; None when
    the source is not a parameter or buffer of the module."""
    if "._parameters[" not in source and "._buffers[" not in source:
        return None
    parts = [a or b for a, b in _KEY.findall(source)]
    return ".".join(parts[1:] if parts and parts[0] == "self" else parts)


def _slots(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> list[_Slot]:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    slots: list[_Slot | None] = []
    sym_inputs = []
    for i, (n, x) in enumerate(zip(placeholders, example_inputs)):
        arg = n.meta.get("grapharg")
        src = arg.source if arg is not None else None
        source = (src.name() if callable(src.name) else src.name) if src is not None else n.name
        if isinstance(x, torch.Tensor):
            name = _weight_name(source)
            if name is None and isinstance(x, torch.nn.Parameter):
                name = n.name
            if name:
                slots.append(_Slot("weight", name))
            elif source.startswith("L['self']") and x.dim() == 0:
                # a float attribute of the model (LayerNorm's eps) that Dynamo passes as a
                # 0-dim tensor and reads with .item(): a constant of the model, not an input
                slots.append(_Slot("constant", n.name))
            else:  # `L['args'][0]` -> `args[0]`, `L['input_ids']` -> `input_ids`
                slots.append(_Slot("user", re.sub(r"^L\['([^']*)'\]", r"\1", source)))
        elif isinstance(x, (int, torch.SymInt)):
            slots.append(None)
            sym_inputs.append(i)
        else:
            raise SpokeshaveError(f"graph input '{n.name}' is a {type(x).__name__}; spokeshave "
                                  f"takes tensors and sizes")
    for i in sym_inputs:
        expr = placeholders[i].meta["example_value"]
        expr = expr.node.expr if isinstance(expr, torch.SymInt) else expr
        for j, (n, s) in enumerate(zip(placeholders, slots)):
            val = n.meta.get("example_value")
            if s is None or s.kind != "user" or not isinstance(val, torch.Tensor):
                continue
            dims = [d for d, size in enumerate(val.shape)
                    if isinstance(size, torch.SymInt) and size.node.expr == expr]
            if dims:
                user_index = sum(t is not None and t.kind == "user" for t in slots[:j])
                slots[i] = _Slot("size", placeholders[i].name, user_index, dims[0])
                break
        else:
            raise SpokeshaveError(f"graph input '{placeholders[i].name}' is a size that no input "
                                  f"tensor has; spokeshave cannot read it off the inputs")
    return slots  # type: ignore[return-value]


class _Captured(torch.nn.Module):
    """A captured graph as a module: weights as its own parameters and buffers (so export
    sees weights, not inputs), called with the user tensors only."""

    def __init__(self, gm: torch.fx.GraphModule, slots: list[_Slot], args: list[Any]):
        super().__init__()
        self._spk_graph = gm
        self._spk_slots = slots
        for s, x in zip(slots, args):
            if s.kind != "weight":
                continue
            *path, leaf = s.name.split(".")
            owner: torch.nn.Module = self
            for p in path:
                if not hasattr(owner, p):
                    owner.add_module(p, torch.nn.Module())
                owner = getattr(owner, p)
            if isinstance(x, torch.nn.Parameter):
                owner.register_parameter(leaf, x)
            else:
                owner.register_buffer(leaf, x)
        self._spk_buffers = {n for n, _ in self.named_buffers()}
        # plain attributes, not buffers: export folds them, so `.item()` reads a value
        self._spk_constants = {s.name: x.detach().clone() for s, x in zip(slots, args)
                               if s.kind == "constant"}

    def forward(self, *user: torch.Tensor) -> Any:
        args, it = [], iter(user)
        for s in self._spk_slots:
            if s.kind == "user":
                args.append(next(it))
            elif s.kind == "size":
                args.append(user[s.of].shape[s.dim])
            elif s.kind == "constant":
                args.append(self._spk_constants[s.name])
            elif s.name in self._spk_buffers:
                args.append(self.get_buffer(s.name))
            else:
                args.append(self.get_parameter(s.name))
        return self._spk_graph(*args)


@dataclass
class _Graph:
    """One captured graph's state: the calibration inputs recorded so far, then its model."""

    opts: dict[str, Any]
    entry: GraphRecord
    wait: int                     # calls to run as captured even without calibration
    calls: int = 0
    batches: list[list[torch.Tensor]] = field(default_factory=list)
    compiled: Any = None

    def record(self, gm: torch.fx.GraphModule, slots: list[_Slot], args: tuple,
               inputs: list[torch.Tensor]) -> Any:
        """Record this call's inputs; compile once enough are recorded (None: run as captured)."""
        self.calls += 1
        if len(self.batches) < self.opts["calibration"]:
            self.batches.append([x.detach().clone() for x in inputs])
        if self.calls <= max(self.opts["calibration"], self.wait):
            return None
        from .api import compile as compile_model

        module = _Captured(gm, slots, list(args))
        example = tuple(inputs)
        # the dims Dynamo traced symbolically stay dynamic (AUTO: unless the model pins them)
        dynamic = {"user": tuple({d: torch.export.Dim.AUTO for d in dims} or None
                                 for dims in _symbolic_dims(gm, slots))}
        with torch.no_grad():
            self.compiled = compile_model(
                module, example, pipeline=self.opts.get("pipeline"),
                backend=self.opts["backend"], calibration=self.batches or None,
                dynamic_shapes=dynamic, verify=self.opts["verify"])
        self.entry.status, self.entry.compiled = "compiled", self.compiled
        return self.compiled


def _symbolic_dims(gm: torch.fx.GraphModule, slots: list[_Slot]) -> list[list[int]]:
    """For each user input, the dims Dynamo traced with a symbolic size."""
    out = []
    for n, s in zip((n for n in gm.graph.nodes if n.op == "placeholder"), slots):
        if s.kind == "user":
            val = n.meta.get("example_value")
            out.append([d for d, size in enumerate(getattr(val, "shape", ()))
                        if isinstance(size, torch.SymInt) and not size.node.expr.is_number])
    return out
