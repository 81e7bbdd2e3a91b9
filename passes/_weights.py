"""Parameter helpers shared by the passes that rewrite weights.

Passes never change a stored tensor in place (the store may share memory with the user's
model): they add new parameters and drop the ones nothing reads any more.
"""
from __future__ import annotations

import torch

from spokeshave.compiler.ir import Function, TensorType, Value
from spokeshave.compiler.weights import WeightStore


def param_tensor(func: Function, store: WeightStore, v: Value) -> torch.Tensor | None:
    """The stored tensor of a parameter argument, or None for anything else."""
    name = func.param_name(v)
    return store[name] if name is not None else None


def add_param(func: Function, store: WeightStore, base: str, t: torch.Tensor) -> Value:
    """A new parameter argument holding `t`, named `base` (or `base.1`... if taken)."""
    name = store.fresh_name(base)
    store[name] = t.contiguous()
    return func.add_param(name, TensorType.of(t))


def unused_params(func: Function) -> set[str]:
    """Names of the parameters nothing reads. Take it before a rewrite and pass it to
    `drop_dead_params` afterwards, so only what the rewrite made dead goes."""
    return {n for a in func.args if (n := func.param_name(a)) is not None and not a.uses}


def drop_dead_params(func: Function, store: WeightStore, spare: set[str] = frozenset()) -> int:
    """Erase parameter arguments nothing reads (except those named in `spare`) and the
    tensors no function refers to any more. Returns how many arguments went."""
    removed = set()
    for arg in list(func.args):
        name = func.param_name(arg)
        if name is not None and not arg.uses and name not in spare:
            func.erase_arg(arg)
            removed.add(name)
    live = set(func.params())
    for name in removed - live:
        if name in store:
            del store[name]
    return len(removed)


def param_base(func: Function, v: Value, fallback: str) -> str:
    """The name new parameters derived from `v` start with: its own name, or `fallback`."""
    name = func.param_name(v)
    return name if name is not None else fallback
