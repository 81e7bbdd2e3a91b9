"""`cse`: common-subexpression elimination of pure ops within each block.

Two ops are the same expression when they have the same name, operands, attributes and
result types and neither has regions; impure ops (random, dropout in training, `empty`)
are never merged. Nested regions start a fresh scope (fused groups are isolated).
"""
from __future__ import annotations

from dataclasses import dataclass

from spokeshave.compiler.ir import Block, Module
from spokeshave.compiler.passmanager import Pass, PassContext
from spokeshave.compiler.printer import format_attr_dict
from spokeshave.compiler.rewrite import is_pure


def _cse_block(block: Block) -> int:
    seen: dict[tuple, object] = {}
    removed = 0
    for op in list(block.ops):
        for r in op.regions:
            for b in r.blocks:
                removed += _cse_block(b)
        if op.regions or not op.results or not is_pure(op):
            continue
        key = (op.name, tuple(id(v) for v in op.operands), format_attr_dict(op.attributes),
               tuple(str(r.type) for r in op.results))
        prev = seen.get(key)
        if prev is None:
            seen[key] = op
            continue
        for old, new in zip(op.results, prev.results):
            old.replace_all_uses_with(new)
        block.erase(op)
        removed += 1
    return removed


@dataclass
class CSE(Pass):
    name = "cse"

    def run(self, module: Module, ctx: PassContext) -> bool:
        n = sum(_cse_block(f.body) for f in module.functions)
        ctx.stat(self.name, "ops removed", n)
        return n > 0
