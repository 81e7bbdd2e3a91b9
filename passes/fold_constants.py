"""`fold-constants`: evaluate at compile time every pure ATen op whose inputs are all known.

Known inputs are parameters (their tensors are in the weight store), `spk.constant`
scalars and earlier folded results. A folded tensor becomes a new parameter
(`folded.<op>.<n>` in the weight store), so `aten.t(%w)` costs nothing at run time; the
old parameter dies and `dce` drops it. A result that would be much larger than its
inputs (an `expand` to a big mask) is not materialised unless it stays under
`max-new-elements`, since folding it would trade a cheap broadcast for memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spokeshave.compiler import aten
from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.ir import Function, Module, TensorType, Value
from spokeshave.compiler.passmanager import Pass, PassContext, Range, option
from spokeshave.compiler.rewrite import is_pure


def _known_value(f: Function, v: Value, ctx: PassContext, folded: dict):
    if v in folded:
        return True, folded[v]
    name = f.param_name(v)
    if name is not None:
        return True, ctx.weights[name]
    d = v.defining_op
    if d is not None and d.name == "spk.constant":
        return True, d.attributes["value"]
    if d is not None and d.name == "spk.none":
        return True, None
    return False, None


@dataclass
class FoldConstants(Pass):
    name = "fold-constants"
    max_new_elements: int = option(1 << 16, range=Range(0),
                                   help="largest folded result that may exceed its inputs")

    def run(self, module: Module, ctx: PassContext) -> bool:
        changed = False
        for f in module.functions:
            folded: dict[Value, object] = {}
            for op in list(f.body.ops):
                if not aten.is_aten_like(op.name) or not is_pure(op) or op.regions:
                    continue
                if not all(isinstance(r.type, TensorType) and r.type.is_static for r in op.results):
                    continue
                known = [_known_value(f, v, ctx, folded) for v in op.operands]
                if not all(k for k, _ in known):
                    continue
                in_elems = sum(x.numel() for _, x in known if isinstance(x, torch.Tensor))
                out_elems = sum(r.type.numel() for r in op.results)
                if out_elems > max(in_elems, self.max_new_elements):
                    ctx.stat(self.name, "skipped (too large)")
                    continue
                try:
                    with torch.no_grad():
                        out = aten.CallPlan(op).call([x for _, x in known])
                except (SpokeshaveError, RuntimeError, TypeError, ValueError, IndexError) as e:
                    # As in MLIR, a fold that fails is no fold: the op stays for run time.
                    ctx.stat(self.name, "skipped (cannot evaluate)")
                    ctx.remark(op, f"fold-constants: not folding {op.describe()}: {e}")
                    continue
                outs = list(out) if isinstance(out, (list, tuple)) else [out]
                if len(outs) != len(op.results) or not all(
                        isinstance(t, torch.Tensor) and tuple(t.shape) == r.type.shape
                        and t.dtype == r.type.torch_dtype for t, r in zip(outs, op.results)):
                    ctx.stat(self.name, "skipped (result does not match the op's type)")
                    ctx.remark(op, f"fold-constants: not folding {op.describe()}: its value does not "
                               f"have the op's result type")
                    continue
                short = op.name.split(".", 1)[1]
                for r, t in zip(op.results, outs):
                    name = ctx.weights.fresh_name(f"folded.{short}")
                    ctx.weights[name] = t.detach().contiguous()
                    p = f.add_param(name, r.type)
                    r.replace_all_uses_with(p)
                    folded[p] = ctx.weights[name]
                f.body.erase(op)
                ctx.stat(self.name, "ops folded")
                changed = True
        return changed


