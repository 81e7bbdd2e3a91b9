"""`dce`: dead-code elimination.

Erases pure ops whose results are unused (walking backwards so chains die in one sweep),
then parameter arguments nothing reads, and drops their tensors from the weight store so
that a pass which rewrote a weight (e.g. fold-constants) does not keep both copies alive.
User inputs are never removed: they are the function's calling convention.
"""
from __future__ import annotations

from dataclasses import dataclass

from spokeshave.compiler.ir import Block, Module
from spokeshave.compiler.passmanager import Pass, PassContext
from spokeshave.compiler.rewrite import is_pure


def _dce_block(block: Block) -> int:
    removed = 0
    for op in reversed(list(block.ops)):
        for r in op.regions:
            for b in r.blocks:
                removed += _dce_block(b)
        if op.results and not op.has_uses() and is_pure(op):
            block.erase(op)
            removed += 1
    return removed


@dataclass
class DCE(Pass):
    name = "dce"

    def run(self, module: Module, ctx: PassContext) -> bool:
        ops = sum(_dce_block(f.body) for f in module.functions)
        removed: set[str] = set()
        for f in module.functions:
            for arg in list(f.args):
                name = f.param_name(arg)
                if name is not None and not arg.uses:
                    f.erase_arg(arg)
                    removed.add(name)
        params = len(removed)
        live = {n for f in module.functions for n in f.params()}
        dropped = [n for n in removed - live if n in ctx.weights]
        for n in dropped:
            del ctx.weights[n]
        ctx.stat(self.name, "ops removed", ops)
        ctx.stat(self.name, "params removed", params)
        ctx.stat(self.name, "weights dropped", len(dropped))
        return bool(ops or params)
