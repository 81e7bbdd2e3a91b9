"""The torch.export frontend: `nn.Module` -> (`Module`, `WeightStore`, calling convention).

We export with `torch.export.export`, then run `run_decompositions` with the default core
ATen table minus the high-level ops that passes want to see whole (`KEEP_OPS`: linear,
layer_norm, gelu, sdpa, ...). Every remaining ATen call becomes a generic op through
`compiler.aten`; parameters, buffers and lifted constants become function arguments tagged
`{spk.param = "<fqn>"}` whose tensors go into the weight store. Symbolic dims (from
`dynamic_shapes`) become `?` in the types and `i64` values in the IR.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import operator
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from . import aten
from .dialect.py import PY_FUNCTIONS
from .dynamic import SpecializationWatch, plan_dynamic
from .errors import ExportError, Location, SpokeshaveError, UnsupportedError
from .interpreter import Interpreter
from .ir import NONE, Function, Module, Op, TensorType, Type, Value, dtype_name
from .signature import InputSpec, specs_from_program
from .stamping import NotStampable, find_layer_stack, outputs_match, stamped_import
from .weights import WeightStore, is_placeholder

# High-level ops kept whole: passes pattern-match on them (quantize linear, fold norms...).
KEEP_OPS = (
    torch.ops.aten.linear.default,
    torch.ops.aten.layer_norm.default,
    torch.ops.aten.gelu.default,
    torch.ops.aten.silu.default,
    torch.ops.aten.scaled_dot_product_attention.default,
    torch.ops.aten.matmul.default,
    torch.ops.aten.softmax.int,
    torch.ops.aten.embedding.default,
    torch.ops.aten.rms_norm.default,
)

# Runtime assertions about symbolic sizes: checked by torch.export already, not modelled.
_DROPPED = {torch.ops.aten._assert_scalar.default, torch.ops.aten.sym_constrain_range_for_size.default,
            torch.ops.aten._assert_tensor_metadata.default}


@dataclass
class Imported:
    module: Module
    weights: WeightStore
    in_spec: Any   # pytree spec of the user inputs, to flatten calls
    out_spec: Any  # pytree spec of the outputs, to rebuild them
    inputs: list[InputSpec] | None = None  # shapes, dtypes and dynamic ranges of the flat inputs
    notes: list[str] = field(default_factory=list)  # how it was imported, when that is news


def decomposition_table() -> dict:
    table = torch.export.default_decompositions()
    for op in KEEP_OPS:
        table.pop(op, None)
    return table


def model_location(model: torch.nn.Module) -> str:
    """`BertModel (transformers/models/bert/modeling_bert.py:850)`: where the user's model lives."""
    cls = type(model)
    try:
        forward = inspect.unwrap(cls.forward)  # past decorators (transformers wraps forward)
        file = inspect.getsourcefile(forward) or "?"
        line = inspect.getsourcelines(forward)[1]
        return f"{cls.__name__}.forward ({file}:{line})"
    except (OSError, TypeError):
        return cls.__name__


def export_model(model: torch.nn.Module, example_inputs: tuple, example_kwargs: dict | None = None,
                 dynamic_shapes: Any = None, decompose: bool = True,
                 watch: SpecializationWatch | None = None) -> torch.export.ExportedProgram:
    """Run torch.export; on failure raise `ExportError` with torch's reason and the model's place."""
    try:
        with _quiet_torch(), (watch or contextlib.nullcontext()):
            ep = torch.export.export(model, tuple(example_inputs), kwargs=example_kwargs or None,
                                     dynamic_shapes=dynamic_shapes, strict=False)
            if decompose:
                ep = ep.run_decompositions(decomposition_table())
    except Exception as e:  # torch raises many types here; all mean "could not trace"
        summary = "\n  ".join(_export_reason(e))
        raise ExportError(f"torch.export could not trace {model_location(model)}:\n  "
                          f"{summary}\n"
                          f"Fix the model so torch.export can trace it (see "
                          f"https://pytorch.org/docs/stable/export.html), or pass dynamic_shapes "
                          f"that match how it is called.") from None
    return ep


@contextlib.contextmanager
def _quiet_torch():
    """torch.export logs the graph on failure and warns about its own pytree internals; the
    error we raise says what matters, so neither reaches the user."""
    loggers = [logging.getLogger("torch")] + [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
        if n.startswith("torch.") and logging.getLogger(n).level != logging.NOTSET]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*|copyreg")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


# Lines of torch's export errors that point at its own logging knobs, not at the model.
_TORCH_BOILERPLATE = re.compile(r"(For more information|For extended logs|If you suspect|"
                                r"For more debugging help|For C\+\+ stack trace|"
                                r"The error above occurred when calling)")


def _export_reason(e: Exception, max_lines: int = 10) -> list[str]:
    """torch's reason, shortened: its first lines without the logging boilerplate, plus the
    user's line that raised it (torch puts that last, under "The following call raised")."""
    lines = [ln.rstrip() for ln in str(e).strip().splitlines()
             if ln.strip() and not _TORCH_BOILERPLATE.match(ln.strip())]
    keep = lines[:max_lines]
    for i, ln in enumerate(lines):
        if ln.strip().startswith("The following call raised this error"):
            keep = lines[:min(i, max_lines)] + lines[i:i + 3]
            break
    if keep:
        keep[0] = f"{type(e).__name__}: {keep[0]}"
    return keep


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _node_location(node: torch.fx.Node) -> Location | None:
    trace = node.meta.get("stack_trace")
    if trace:
        frames = _FRAME.findall(trace)
        if frames:
            file, line = frames[-1]
            return Location(os.path.basename(file), int(line), 0)
    return None


def _type_of(val: Any) -> Type:
    if isinstance(val, torch.Tensor):
        shape = tuple(d if isinstance(d, int) else None for d in val.shape)
        return TensorType(shape, dtype_name(val.dtype))
    if val is None:
        return NONE
    return aten.scalar_type_of(val)


class _Importer:
    def __init__(self, ep: torch.export.ExportedProgram):
        self.ep = ep
        self.values: dict[torch.fx.Node, Value | list[Value]] = {}
        self.func: Function | None = None

    def run(self) -> tuple[Module, WeightStore]:
        ep, sig = self.ep, self.ep.graph_signature
        placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
        specs = {s.arg.name: s for s in sig.input_specs}
        user, params = [], []
        for n in placeholders:
            spec = specs[n.name]
            kind = spec.kind.name
            if kind == "USER_INPUT":
                user.append(n)
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                params.append((n, spec.target))
            else:
                raise UnsupportedError(f"exported input '{n.name}' of kind {kind} is not supported")
        for s in sig.output_specs:
            if s.kind.name != "USER_OUTPUT":
                raise UnsupportedError(f"the model mutates '{s.target}' ({s.kind.name}) during "
                                       f"forward; only inference graphs without mutation import")
        weights = WeightStore()
        arg_types, arg_names, arg_attrs = [], [], []
        for n in user:
            arg_types.append(_type_of(n.meta["val"]))
            arg_names.append(n.name)
            arg_attrs.append({})
        for n, target in params:
            data = ep.state_dict[target] if target in ep.state_dict else ep.constants[target]
            if isinstance(data, torch.nn.Parameter):
                data = data.data
            weights[target] = data.detach()
            arg_types.append(_type_of(n.meta["val"]))
            arg_names.append(target)
            arg_attrs.append({"spk.param": target})
        f = Function("forward", arg_types, arg_names, arg_attrs)
        self.func = f
        for n, a in zip(user + [p for p, _ in params], f.args):
            self.values[n] = a
        for node in ep.graph.nodes:
            if node.op == "call_function":
                self.import_call(node)
            elif node.op == "output":
                outs = [self.value(x) for x in torch.utils._pytree.tree_leaves(node.args[0])]
                f.result_types = [v.type for v in outs]
                f.body.append(Op("func.return", outs))
            elif node.op != "placeholder":
                raise UnsupportedError(f"FX node kind '{node.op}' ({node.name}) is not supported")
        return Module([f]), weights

    def value(self, x: Any) -> Value:
        if isinstance(x, torch.fx.Node):
            v = self.values[x]
            if isinstance(v, list):
                raise UnsupportedError(f"'{x.name}' has several results; expected one")
            return v
        return self.constant(x)

    def constant(self, x: Any) -> Value:
        if x is None:
            return self.emit(Op("spk.none", [], [NONE])).result
        return self.emit(Op("spk.constant", [], [aten.scalar_type_of(x)], {"value": x})).result

    def emit(self, op: Op) -> Op:
        return self.func.body.append(op)

    def import_call(self, node: torch.fx.Node) -> None:
        target = node.target
        if target is operator.getitem:
            src, idx = node.args
            self.values[node] = self.values[src][idx]
            return
        if target in _DROPPED:
            return
        loc = _node_location(node)
        val = node.meta.get("val")
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        result_types = [_type_of(v) for v in vals]
        if isinstance(target, torch._ops.OpOverload):
            enc = aten.encode_call(target, node.args, node.kwargs,
                                   lambda x: isinstance(x, torch.fx.Node))
            operands = [self.constant(o[1]) if isinstance(o, tuple) else self.value(o)
                        for o in enc.operands]
            op = Op(aten.op_name(target), operands, result_types, enc.attributes, loc=loc)
        else:
            qual = f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}"
            qual = qual.replace("_operator.", "operator.")
            if qual not in PY_FUNCTIONS:
                raise UnsupportedError(f"call to {target} at {loc or node.name} is not supported; "
                                       f"only ATen ops and symbolic-size arithmetic import")
            if node.kwargs:
                raise UnsupportedError(f"keyword arguments to {qual} are not supported")
            op = Op(f"py.{qual}", [self.value(a) for a in node.args], result_types, loc=loc)
        self.emit(op)
        if isinstance(val, (list, tuple)):
            self.values[node] = list(op.results)
        else:
            self.values[node] = op.result


def import_program(ep: torch.export.ExportedProgram) -> Imported:
    """An ExportedProgram as IR + weights + the pytree specs to call it like the model."""
    module, weights = _Importer(ep).run()
    return Imported(module, weights, ep.call_spec.in_spec, ep.call_spec.out_spec,
                    specs_from_program(ep))


def import_model(model: torch.nn.Module, example_inputs: tuple, example_kwargs: dict | None = None,
                 dynamic_shapes: Any = None, decompose: bool = True,
                 calibration: list[tuple[tuple, dict]] | None = None,
                 stamp_layers: bool = True) -> Imported:
    """Export `model` and import it. Without `dynamic_shapes`, the dims in which the
    `calibration` batches ((args, kwargs) pairs) differ from the example become dynamic.
    A deep stack of alike layers is exported cut to a few and stamped to its depth
    (`compiler.stamping`) unless `stamp_layers` is False; the result is checked to be the
    whole export's, and anything that does not check out is exported whole."""
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"compile() takes a torch.nn.Module, got {type(model).__name__}")
    # Restore each submodule's own mode: `model.train(True)` would also flip submodules the
    # user keeps in eval mode (frozen batch norms while fine-tuning).
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    plan = None
    if dynamic_shapes is None and calibration:
        plan = plan_dynamic(model, tuple(example_inputs), dict(example_kwargs or {}), calibration)
    example = plan.example if plan is not None else (tuple(example_inputs), dict(example_kwargs or {}))

    def export_now() -> Imported:
        if plan is None:
            ep = export_model(model, example_inputs, example_kwargs, dynamic_shapes, decompose)
        else:
            watch = SpecializationWatch()
            ep = export_model(model, *plan.example, plan.dynamic_shapes, decompose, watch)
            plan.check(ep, watch)
        return import_program(ep)

    try:
        stack = find_layer_stack(model) if stamp_layers else None
        if stack is not None:
            try:
                imported, note = stamped_import(model, stack, export_now,
                                                lambda imp: _runs_like(model, imp, example))
                imported.notes.append(note)
                return imported
            except (NotStampable, SpokeshaveError):
                pass  # the whole export below decides, and reports its own errors
        return export_now()
    finally:
        for m, training in modes:
            m.training = training


def _runs_like(model: torch.nn.Module, imported: Imported, example: tuple[tuple, dict]) -> str | None:
    """Why `imported` does not compute what `model` does on `example`, or None. A model
    without real weights cannot tell: None."""
    if any(t.is_meta or is_placeholder(t) for _, t in imported.weights.items()):
        return None
    args, kwargs = example
    flat = torch.utils._pytree.tree_leaves((args, kwargs))
    with torch.no_grad():
        want = torch.utils._pytree.tree_leaves(model(*args, **kwargs))
        got = Interpreter(imported.module, imported.weights)(*flat)
    return outputs_match(got, want)
