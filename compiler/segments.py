"""Layer segments of a function: cut it into per-layer pieces, compile each on its own, and
splice the compiled pieces back (what streaming compilation of large checkpoints runs on).

A parameter's *layer* is its name up to the last `.<index>` component
(`model.layers.3.mlp.up_proj.weight` -> `model.layers.3`; `lm_head.weight` has none). The
entry function's ops are split in program order into maximal runs that read the parameters
of one layer; an op that reads no parameter joins the next run that does (the position and
mask computations join the first block that reads them, a block's residual add the block
after it, with the next norm's statistics it feeds). Each run becomes a `Segment`. A run's
trailing op that reads parameters and whose result only the next run reads, fanned out to
several ops of which some read parameters, moves into it: a post-LN block's closing
LayerNorm, which feeds the next block's Q, K and V and which that block's smoothing folds
into.

`outline(func, segment)` copies a segment into a function of its own: its user inputs are
the values it reads from earlier segments or the entry's inputs (tensors and `i64` sizes),
its parameters those of its layer, its results the values later segments or the return
read. `splice(func, segment, compiled)` replaces the segment's ops by the body of the
compiled function (whose inputs are in the same order), adds the parameters the compiled
function introduced and drops those it no longer reads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SpokeshaveError
from .ir import Block, Function, Op, Region, Value

_LAYER = re.compile(r"^(.*\.\d+)\.")


def layer_of(param: str) -> str | None:
    """The layer a parameter belongs to: its name up to the last `.<index>` component."""
    m = _LAYER.match(param)
    return m.group(1) if m else None


@dataclass
class Segment:
    """A run of entry-function ops that read the parameters of one layer (`layer` None: of
    no numbered layer, such as the embeddings and the head)."""

    layer: str | None
    name: str = ""                                       # the layer, or its modules (the head)
    ops: list[Op] = field(default_factory=list)
    params: list[str] = field(default_factory=list)   # names, in first-use order
    inputs: list[Value] = field(default_factory=list)   # non-parameter values read from outside
    outputs: list[Value] = field(default_factory=list)  # values read after the segment


def plan_segments(func: Function) -> list[Segment]:
    """The entry function's ops as layer segments, in program order."""
    params = {a: n for a in func.args if (n := func.param_name(a)) is not None}
    segments: list[Segment] = []
    pending: list[Op] = []
    for op in func.body.ops[:-1]:
        used = [params[v] for v in op.operands if v in params]
        if not used:
            pending.append(op)
            continue
        layer = layer_of(used[0])
        if not segments or segments[-1].layer != layer:
            segments.append(Segment(layer, layer or ""))
        seg = segments[-1]
        seg.ops += pending + [op]
        pending = []
        if layer is None:
            modules = seg.name.split("+") if seg.name else []
            for p in used:
                if (m := p.rsplit(".", 1)[0]) not in modules:
                    modules.append(m)
            seg.name = "+".join(modules)
    if pending:  # trailing ops that read no parameter (the final reshape of the logits)
        if not segments:
            segments.append(Segment(None, "rest"))
        segments[-1].ops += pending
    for a, b in zip(segments, segments[1:]):
        _hand_over_tail(a, b, params)
    return segments


def _hand_over_tail(a: Segment, b: Segment, params: dict[Value, str]) -> None:
    """Move `a`'s trailing ops that read parameters and whose results only `b` reads into
    `b`: a post-LN block's closing LayerNorm feeds only the next block, whose passes fold
    into it (SmoothQuant's scales, norm folding) and so must see it in their segment."""
    mine = set(b.ops)
    while len(a.ops) > 1:
        op = a.ops[-1]
        uses = [u for r in op.results for u in r.uses]
        if (not any(v in params for v in op.operands) or not uses or not all(u in mine for u in uses)
                or len(set(uses)) < 2 or not any(v in params for u in uses for v in u.operands)):
            return  # only a value the next block fans out to its own layers (QKV) moves
        a.ops.pop()
        b.ops.insert(0, op)
        mine.add(op)


def boundary(func: Function, seg: Segment) -> None:
    """Fill in what `seg` reads from outside (parameters by name, other values in first-use
    order) and which of its results are read outside, as `func` is now (segments spliced
    before it have new ops and values)."""
    params = {a: n for a in func.args if (n := func.param_name(a)) is not None}
    mine = set(seg.ops)
    seg.params, seg.inputs, seg.outputs = [], [], []
    seen: set[Value] = set()
    for op in seg.ops:
        for v in op.operands:
            if v in params:
                if params[v] not in seg.params:
                    seg.params.append(params[v])
            elif v not in seen and v.defining_op not in mine:
                seen.add(v)
                seg.inputs.append(v)
        for r in op.results:
            if any(u not in mine for u in r.uses):
                seg.outputs.append(r)


def outline(func: Function, seg: Segment) -> Function:
    """A function computing `seg` alone: inputs `seg.inputs`, then its parameters; results
    `seg.outputs` (both filled in here, by `boundary`). The ops are copies; `func` is left
    as it is."""
    boundary(func, seg)
    params = {n: a for a in func.args if (n := func.param_name(a)) is not None}
    out = Function("forward", [v.type for v in seg.inputs],
                   [v.name_hint or f"in{i}" for i, v in enumerate(seg.inputs)])
    mapping: dict[Value, Value] = dict(zip(seg.inputs, out.args))
    for name in seg.params:
        mapping[params[name]] = out.add_param(name, params[name].type)
    for op in seg.ops:
        out.body.append(copy_op(op, mapping))
    results = [mapping[v] for v in seg.outputs]
    out.result_types = [v.type for v in results]
    out.body.append(Op("func.return", results))
    return out


def copy_op(op: Op, mapping: dict[Value, Value]) -> Op:
    """A copy of `op` reading `mapping[v]` for each operand `v`; its results are added to
    `mapping` (regions are copied whole)."""
    regions = []
    for r in op.regions:  # regions are isolated: they read only their block arguments
        blocks = []
        for b in r.blocks:
            nb = Block([a.type for a in b.args], [a.name_hint for a in b.args])
            inner = dict(zip(b.args, nb.args))
            for o in b.ops:
                nb.append(copy_op(o, inner))
            blocks.append(nb)
        regions.append(Region(blocks))
    new = Op(op.name, [mapping[v] for v in op.operands], [r.type for r in op.results],
             dict(op.attributes), regions, op.loc)
    for old, r in zip(op.results, new.results):
        r.name_hint = old.name_hint
        mapping[old] = r
    return new


def splice(func: Function, seg: Segment, compiled: Function,
           rename: dict[str, str] | None = None) -> list[Value]:
    """Replace `seg`'s ops in `func` by `compiled`'s body (outlined from `seg`, then compiled:
    same user inputs in the same order, one result per `seg.outputs`). `rename` maps a
    parameter of `compiled` to the name it takes in `func` (default: its own). Returns the
    values that now stand for `seg.outputs`."""
    rename = rename or {}
    user = compiled.user_inputs()
    if len(user) != len(seg.inputs) or len(compiled.return_op.operands) != len(seg.outputs):
        raise SpokeshaveError(f"segment {seg.name}: the compiled segment takes {len(user)} inputs "
                              f"and returns {len(compiled.return_op.operands)} values; the "
                              f"outlined one took {len(seg.inputs)} and returned {len(seg.outputs)}")
    mapping: dict[Value, Value] = dict(zip(user, seg.inputs))
    params = func.params()
    for name, arg in compiled.params().items():
        target = rename.get(name, name)
        if target not in params:
            params[target] = func.add_param(target, arg.type)
        elif params[target].type != arg.type:
            raise SpokeshaveError(f"segment {seg.name}: parameter '{target}' is {arg.type} in the "
                                  f"compiled segment but {params[target].type} in the model")
        mapping[arg] = params[target]
    anchor = seg.ops[0]
    body = func.body
    for op in compiled.body.ops[:-1]:
        op.operands = [mapping.get(v, v) for v in op.operands]
        op.parent = None
        body.insert_before(anchor, op)
    compiled.body.ops = [compiled.body.ops[-1]]
    results = [mapping.get(v, v) for v in compiled.return_op.operands]
    for old, new in zip(seg.outputs, results):
        old.replace_all_uses_with(new)
    for op in reversed(seg.ops):
        body.erase(op)
    seg.ops = []
    for arg in list(func.params().values()):
        if not arg.uses:
            func.erase_arg(arg)
    return results
