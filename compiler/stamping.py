"""Layer stamping: import a deep model by exporting a few of its layers and copying the rest.

torch.export's time grows with the graph, so a 30-layer decoder takes ~50 s to trace and
decompose although 29 of its layers are the same code. A model whose blocks are the one
`nn.ModuleList` of `N >= MIN_LAYERS` layers of one class with equal settings is instead
exported cut to 4 layers (the list is swapped for one holding its first 4 modules; nothing
is copied, and the model is restored afterwards). `stamp_layer` appends a layer by copying
the last one's segment (`compiler.segments`), renaming its parameters
(`...layers.2.mlp.up.weight` -> `...layers.3.mlp.up.weight`, inserted where the export puts
them) and feeding it what the last layer produced where the last layer read its
predecessor's results; whatever read the last layer's results (the head) reads the copy's.

It is trusted only after two checks, and any doubt means a whole export (never an error):
1. dropping the exported layer 3 and stamping it again from layer 2 (whose predecessor is a
   middle layer too: layer 0's segment also holds the mask and position ops) must give the
   export's IR back exactly, as text with debug locations: the same ops, attributes, types,
   argument order, wiring and source lines;
2. with real weights, the stamped N-layer IR run by the interpreter must match the eager
   model on the example inputs (`MATCH_RTOL` of the output's largest magnitude). A placeholder
   skeleton (streaming compilation) has no weights to run, so there the first check and the
   layers' equal settings carry it.
Equal settings: the layers' submodules have the same classes, parameter shapes and public
attributes (but for their own index, such as `layer_idx`), share no tensor and have no
hooks, so a model that picks attention types per layer (sliding windows, global every k-th
layer) is exported whole. So is a post-LN stack (BERT): its last segment keeps the closing
LayerNorm that the middle ones hand to their successor, and check 1 fails.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .ir import Function, Op, Value
from .printer import print_module
from .segments import Segment, boundary, copy_op, plan_segments
from .weights import WeightStore

# The layer copied must follow a middle layer (layer 0's segment also holds the mask and
# position ops that every layer reads): layer 2, checked against the exported layer 3.
EXPORTED_LAYERS = 4
# Below this depth the export of 4 layers plus the checks saves too little to be worth it.
MIN_LAYERS = 12
# Stamped and whole graphs are the same ops on the same weights; a wrong stamp (a layer
# wired to the wrong input) is off by O(1), float reassociation by ~1e-6 in fp32.
MATCH_RTOL = 1e-4


class NotStampable(Exception):
    """Why a model or IR is not stamped (it is then exported whole)."""


@dataclass
class LayerStack:
    """The model's repeated blocks: `parent.<attr>` is an `nn.ModuleList` named `path`."""

    path: str
    parent: torch.nn.Module
    attr: str
    layers: torch.nn.ModuleList

    @contextlib.contextmanager
    def cut_to(self, k: int) -> Iterator[None]:
        """The model with only its first `k` layers (the same module objects) while inside."""
        setattr(self.parent, self.attr, torch.nn.ModuleList(list(self.layers)[:k]))
        try:
            yield
        finally:
            setattr(self.parent, self.attr, self.layers)


def find_layer_stack(model: torch.nn.Module) -> LayerStack | None:
    """The one `nn.ModuleList` of `MIN_LAYERS` or more alike layers, or None (no such list,
    several, or layers that differ in class, shapes or settings)."""
    stacks = [(name, m) for name, m in model.named_modules()
              if isinstance(m, torch.nn.ModuleList) and len(m) >= MIN_LAYERS]
    if len(stacks) != 1 or not stacks[0][0]:
        return None
    path, layers = stacks[0]
    if not _alike(list(layers)):
        return None
    owner, _, attr = path.rpartition(".")
    return LayerStack(path, model.get_submodule(owner) if owner else model, attr, layers)


def _settings(module: torch.nn.Module) -> list[Any]:
    """What decides a layer's graph besides its weights' values: per submodule its path,
    class, parameter and buffer shapes, and public attributes."""
    out: list[Any] = []
    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            raise NotStampable(f"{name or 'the layer'} has hooks")
        attrs = {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}
        tensors = [(n, tuple(t.shape), t.dtype) for n, t in
                   list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
                   if t is not None]
        out.append((name, type(m), tensors, attrs))
    return out


def _alike(layers: list[torch.nn.Module]) -> bool:
    """Whether every layer is the first one but for its weights' values and its own index
    (an int attribute that is 0 in the first layer and i in layer i, such as `layer_idx`)."""
    seen: set[int] = set()
    try:
        first = _settings(layers[0])
        for i, layer in enumerate(layers):
            for t in list(layer.parameters()) + list(layer.buffers()):
                if id(t) in seen:
                    return False  # shared between layers: names would not follow the index
                seen.add(id(t))
            mine = _settings(layer)
            if len(mine) != len(first):
                return False
            for (name, cls, tensors, attrs), (name0, cls0, tensors0, attrs0) in zip(mine, first):
                if (name, cls, tensors) != (name0, cls0, tensors0) or attrs.keys() != attrs0.keys():
                    return False
                for k, v in attrs.items():
                    is_index = type(v) is int and v == i and attrs0[k] == 0
                    if not is_index and not _same(v, attrs0[k]):
                        return False
    except NotStampable:
        return False
    return True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return False
        if a is b:
            return True
        try:
            return bool(torch.equal(a, b))
        except (RuntimeError, NotImplementedError):  # meta tensors have no values to compare
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a is b or a == b)
    except Exception:  # noqa: BLE001 - an attribute without a usable ==: treat as different
        return False


# ---------------------------------------------------------------------- the IR side


def _layer_segment(segments: list[Segment], layer: str) -> Segment:
    found = [s for s in segments if s.layer == layer]
    if len(found) != 1:
        raise NotStampable(f"layer {layer} is {len(found)} segments")
    return found[0]


def _last_layer(func: Function, path: str, j: int) -> tuple[Segment, Segment, list[Op], list[tuple[Op, int, int]]]:
    """Layers j-2 and j-1 of `func` (which ends with layer j-1) as segments, the ops after
    the last one, and which operands of those read its results (op, slot, result index)."""
    if j < 3:
        raise NotStampable(f"layer {j - 1} has no middle layer before it")
    segments = plan_segments(func)
    prev, last = _layer_segment(segments, f"{path}.{j - 2}"), _layer_segment(segments, f"{path}.{j - 1}")
    boundary(func, prev)
    boundary(func, last)
    if len(prev.outputs) != len(last.outputs):
        raise NotStampable(f"layers {j - 2} and {j - 1} hand on {len(prev.outputs)} and "
                           f"{len(last.outputs)} values")
    body = func.body
    start = body.ops.index(last.ops[0])
    if body.ops[start:start + len(last.ops)] != last.ops:
        raise NotStampable(f"layer {j - 1}'s ops are not contiguous")
    after = body.ops[start + len(last.ops):]
    outputs = {v: k for k, v in enumerate(last.outputs)}
    readers = [(op, i, outputs[v]) for op in after for i, v in enumerate(op.operands) if v in outputs]
    return prev, last, after, readers


def stamp_layer(func: Function, path: str, j: int) -> None:
    """Append layer `j` to `func`, which holds layers 0..j-1 of the stack `path` (j >= 3): a
    copy of layer j-1's segment reading what layer j-1 produced where layer j-1 read layer
    j-2's results; what read layer j-1's results now reads the copy's."""
    prev, tmpl, after, readers = _last_layer(func, path, j)
    prev_ops = set(prev.ops)
    mapping: dict[Value, Value] = {}
    for v in tmpl.inputs:  # what layer j-2 made, layer j-1 makes for j; the rest is shared
        mapping[v] = tmpl.outputs[prev.outputs.index(v)] if v.defining_op in prev_ops else v
    _stamp_params(func, f"{path}.{j - 1}.", f"{path}.{j}.", mapping)
    params = func.params()
    for name in tmpl.params:  # a tensor of no layer, or of another one, is read as it is
        mapping.setdefault(params[name], params[name])
    for op in tmpl.ops:
        func.body.insert_before(after[0], copy_op(op, mapping))
    for op, i, k in readers:
        op.set_operand(i, mapping[tmpl.outputs[k]])


def drop_last_layer(func: Function, path: str, j: int) -> None:
    """Remove layer j-1, the last of the stack `path` in `func`: what read its results reads
    layer j-2's in their place (`stamp_layer(func, path, j - 1)` undoes it, if the layers
    are alike)."""
    prev, last, _, readers = _last_layer(func, path, j)
    for op, i, k in readers:
        op.set_operand(i, prev.outputs[k])
    for op in reversed(last.ops):
        if op.has_uses():
            raise NotStampable(f"layer {j - 1}'s results are read by layers before it")
        func.body.erase(op)
    for name, arg in func.params().items():
        if name.startswith(f"{path}.{j - 1}."):
            if arg.uses:
                raise NotStampable(f"parameter {name} is read outside layer {j - 1}")
            func.erase_arg(arg)


def _stamp_params(func: Function, old: str, new: str, mapping: dict[Value, Value]) -> None:
    """Add a parameter `new...` for each argument `old...`, each run of them right after the
    run it copies (the export lists parameters, then buffers, each by layer)."""
    args = [a for a in func.args if (n := func.param_name(a)) is not None and n.startswith(old)]
    runs: list[list[Value]] = []
    for a in args:
        if runs and runs[-1][-1].index == a.index - 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    for run in reversed(runs):  # later runs first, so earlier indices stay put
        at = run[-1].index + 1
        for off, a in enumerate(run):
            name = new + func.param_name(a)[len(old):]
            mapping[a] = func.add_param(name, a.type, index=at + off)


def outputs_match(got: list[Any], want: list[Any]) -> str | None:
    """None when the stamped graph's outputs are the eager model's, else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs against the model's {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if not isinstance(w, torch.Tensor):
            continue
        if not isinstance(g, torch.Tensor) or g.shape != w.shape:
            return f"output {i} has another shape"
        scale = float(w.abs().max()) if w.numel() else 0.0
        err = float((g.float() - w.float()).abs().max()) if w.numel() else 0.0
        # a bf16 model's own rounding is ~4e-3: still far from a wrong stamp's O(1)
        rtol = max(MATCH_RTOL, 4 * torch.finfo(w.dtype).eps) if w.is_floating_point() else 0.0
        if not err <= rtol * max(scale, 1e-30):
            return f"output {i} differs by {err:.3g} (its largest magnitude {scale:.3g})"
    return None


def stamped_import(model: torch.nn.Module, stack: LayerStack, export: Callable[[], Any],
                   check: Callable[[Any], str | None]) -> tuple[Any, str]:
    """`export()` imports `model` as it is now (an `Imported`); this calls it with the stack
    cut to `EXPORTED_LAYERS`, checks that stamping gives back its last layer, stamps it to
    N, gives it the model's tensors and asks `check(imported)` (None, or why the stamped
    graph is wrong). Returns the stamped import and a note of what was done; raises
    `NotStampable` when the model must be exported whole."""
    n = len(stack.layers)
    with stack.cut_to(EXPORTED_LAYERS):
        imported = export()
    func = imported.module.entry
    exported = print_module(imported.module, debug_info=True)
    drop_last_layer(func, stack.path, EXPORTED_LAYERS)
    stamp_layer(func, stack.path, EXPORTED_LAYERS - 1)
    if print_module(imported.module, debug_info=True) != exported:
        raise NotStampable(f"stamping layer {EXPORTED_LAYERS - 1} does not give the exported one")
    for j in range(EXPORTED_LAYERS, n):
        stamp_layer(func, stack.path, j)
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    store = WeightStore()
    for name in func.params():
        if name in imported.weights:
            store[name] = imported.weights[name]
        elif name in tensors:
            store[name] = tensors[name].detach()
        else:
            raise NotStampable(f"the model has no tensor '{name}'")
    imported.weights = store
    why = check(imported)
    if why is not None:
        raise NotStampable(why)
    return imported, f"exported {EXPORTED_LAYERS} of the {n} layers of {stack.path} and stamped the rest"
