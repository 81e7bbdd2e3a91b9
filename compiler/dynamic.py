"""Dynamic dims read off the data: a dim whose size differs between the example inputs and
the calibration batches is exported as `Dim.AUTO`, so users calibrate on sentences of many
lengths without declaring shapes (as with llm-compressor or torchao).

    plan = plan_dynamic(model, args, kwargs, batches)   # None: every batch has the example's shapes
    ep = export_model(model, *plan.example, dynamic_shapes=plan.dynamic_shapes)
    plan.check(ep, watch)                                # a dim the model pins -> one clear error

`Dim.AUTO` lets torch infer each dim's range (BERT's sequence is bounded by its position
table) and keeps a dim static when the model specialises it. That case is an error here,
because the calibration batches would not fit the compiled model: `SpecializationWatch`
listens to torch's shape-environment log while exporting and remembers, for each guard,
the innermost frame outside torch (the model's own line), so the error can point at it.

The example exported is the first of (the user's example, the batches...) whose varying dims
are all at least 2: torch specialises sizes 0 and 1 while tracing, so a batch-1 example
would pin the batch dim.
"""
from __future__ import annotations

import inspect
import linecache
import logging
import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import SpokeshaveError
from .signature import static_size

_TORCH_DIR = os.path.dirname(torch.__file__)
# our packages, by their folders (the repository root also holds users' test models)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OUR_DIRS = tuple(os.path.join(_ROOT, d) + os.sep
                  for d in ("compiler", "passes", "backends", "costmodel", "spokeshave"))
_SKIPPED_FILES = (logging.__file__, __file__)


@dataclass
class DynamicPlan:
    example: tuple[tuple, dict]                   # the (args, kwargs) to export with
    dynamic_shapes: tuple                         # for torch.export, in signature order
    varying: dict[int, dict[int, list[int]]]      # flat input -> dim -> sizes seen
    names: list[str] = field(default_factory=list)  # flat input names (for messages)

    def check(self, ep: torch.export.ExportedProgram, watch: "SpecializationWatch") -> None:
        """Raise if the model pinned a dim the calibration batches vary."""
        user = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in
                {s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"}]
        for j, dims in self.varying.items():
            shape = user[j].meta["val"].shape
            for d, sizes in dims.items():
                pinned = static_size(shape[d])
                if pinned is not None:
                    where = watch.place(user[j].name, d)
                    raise SpokeshaveError(
                        f"the calibration batches vary dim {d} of input {j} ('{user[j].name}': "
                        f"sizes {', '.join(map(str, sorted(set(sizes))))}), but the model "
                        f"specializes it to {pinned}{where}. Pad or crop the calibration "
                        f"batches to {pinned} along that dim, or change the model so its "
                        f"code does not depend on that size")


def plan_dynamic(model: torch.nn.Module, args: tuple, kwargs: dict,
                 batches: list[tuple[tuple, dict]]) -> DynamicPlan | None:
    """Which dims vary between the example and the calibration batches; None if none does."""
    flat, spec = torch.utils._pytree.tree_flatten((args, kwargs))
    varying: dict[int, dict[int, list[int]]] = {}
    for i, (a, k) in enumerate(batches):
        got, got_spec = torch.utils._pytree.tree_flatten((a, k))
        if got_spec != spec:
            raise SpokeshaveError(f"calibration batch {i} is structured as {got_spec}, but the "
                                  f"example inputs are {spec}")
        for j, (x, e) in enumerate(zip(got, flat)):
            if not isinstance(e, torch.Tensor):
                continue
            if not isinstance(x, torch.Tensor) or x.dim() != e.dim() or x.dtype != e.dtype:
                what = (f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor)
                        else type(x).__name__)
                raise SpokeshaveError(f"calibration batch {i}, input {j} is {what}, but the "
                                      f"example input is {tuple(e.shape)} {e.dtype}: a batch may "
                                      f"differ in sizes, not in rank or dtype")
            for d in range(e.dim()):
                if x.shape[d] != e.shape[d]:
                    varying.setdefault(j, {}).setdefault(d, [e.shape[d]]).append(x.shape[d])
    if not varying:
        return None
    candidates = [(tuple(args), dict(kwargs))] + [(tuple(a), dict(k)) for a, k in batches]

    def fits(c: tuple[tuple, dict]) -> bool:
        leaves = torch.utils._pytree.tree_leaves(c)
        return all(leaves[j].shape[d] >= 2 for j, dims in varying.items() for d in dims)

    example = next((c for c in candidates if fits(c)), candidates[0])
    return DynamicPlan(example, _dynamic_shapes(model, example, varying), varying)


def _dynamic_shapes(model: torch.nn.Module, example: tuple[tuple, dict],
                    varying: dict[int, dict[int, list[int]]]) -> tuple:
    """torch.export's `dynamic_shapes` for `example`: one entry per bound argument, in the
    forward signature's order, with `{dim: Dim.AUTO}` for each varying dim of each tensor."""
    args, kwargs = example
    index = {id(x): j for j, x in enumerate(torch.utils._pytree.tree_leaves(example))}
    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments

    def leaf(x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return None
        dims = varying.get(index.get(id(x), -1), {})
        return {d: torch.export.Dim.AUTO for d in dims} or None

    return tuple(torch.utils._pytree.tree_map(leaf, v) for v in bound.values())


_CREATE = re.compile(r"create_symbol (\w+) = -?\d+ for (.+?) \[")
_GUARD = re.compile(r"eval (.+?) \[guard added\]")
_REPLACE = re.compile(r"set_replacement (\w+) = ")


class SpecializationWatch(logging.Handler):
    """While active, records which symbol torch created for which input dim and, for every
    guard and replacement, the innermost stack frame outside torch and spokeshave."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.symbols: dict[str, str] = {}           # source ("L['x'].size()[1]") -> symbol
        self.events: list[tuple[str, str]] = []      # (message, "file:line: code")
        self._logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")

    def __enter__(self) -> "SpecializationWatch":
        lg = self._logger
        self._saved = (lg.level, lg.propagate, list(lg.handlers))
        lg.setLevel(logging.INFO)
        lg.propagate = False  # nothing reaches the user's console: only this handler listens
        lg.handlers = [self]
        return self

    def __exit__(self, *exc: Any) -> None:
        lg = self._logger
        lg.setLevel(self._saved[0])
        lg.propagate = self._saved[1]
        lg.handlers = self._saved[2]

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = _CREATE.match(msg)
        if m:
            self.symbols[m.group(2)] = m.group(1)
        elif _GUARD.match(msg) or _REPLACE.match(msg):
            self.events.append((msg, _model_frame()))

    def place(self, input_name: str, dim: int) -> str:
        """`" at modeling_bert.py:123 (`code`)"`, where the dim's symbol was first pinned."""
        suffix = f".size()[{dim}]"
        symbol = next((s for src, s in self.symbols.items()
                       if src.endswith(suffix) and f"'{input_name}'" in src), None)
        if symbol is None:
            return ""
        word = re.compile(rf"\b{re.escape(symbol)}\b")
        for msg, frame in self.events:
            if frame and word.search(msg):
                return f" at {frame}"
        return ""


def _model_frame() -> str:
    for fr in reversed(traceback.extract_stack()[:-1]):
        f = os.path.abspath(fr.filename)
        if f.startswith(_TORCH_DIR) or f.startswith(_OUR_DIRS) or f in _SKIPPED_FILES \
                or "/logging/" in f or "<" in fr.filename:
            continue
        code = (fr.line or linecache.getline(fr.filename, fr.lineno)).strip()
        return f"{fr.filename}:{fr.lineno} ({code})"
    return ""
