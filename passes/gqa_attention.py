"""`gqa-attention`: grouped-query attention's repeated keys and values folded into the attention.

Llama-family models (SmolLM2, Llama, Mistral, Qwen) keep fewer key/value heads than query
heads and, before `scaled_dot_product_attention`, repeat each one `n_rep` times (HF's
`repeat_kv`): `unsqueeze(k, 2)`, `expand` to `[B, KVH, n_rep, S, D]`, `view` to
`[B, KVH * n_rep, S, D]`. The view of an expanded tensor is a copy, made twice per layer,
and three ops each for K and V. `aten.scaled_dot_product_attention` takes the unrepeated
heads itself with `enable_gqa=True`, reading query head `h` against key/value head
`h // n_rep`, which is exactly the head the repeat put there. So the pattern
`sdpa(q, view(expand(unsqueeze(k))), view(expand(unsqueeze(v))))` becomes
`sdpa(q, k, v, enable_gqa=true)`.

Exact: the same keys and values meet the same queries. On the CPU, torch's attention
kernels give bit-identical results either way (checked in the tests on masked, causal, f32
and bf16 cases) and the GQA form is faster (one decode step's attention 31 -> 12 us, a
64-token batch of 4 438 -> 330 us, on 2 cores; SmolLM2's fp32 single-token forward on the
CPU backend 48.8 -> 45.7 ms, prefill 1 x 256 467 -> 458 ms).

The CPU backend's default pipeline runs it (`canonicalize,cse,dce,gqa-attention,fuse`);
the reference and Triton defaults do not. It was opt-in while w4g SmolLM2's CPU decode step
took ~650-1,500 minor page faults a call with it (5 without), spread one per op. The cause
was CPython's frame stack, not this rewrite: the interpreter's block function, with a slot
per value, ended near the edge of a 16 KiB stack chunk, so each op's call chain opened a
chunk and unmapped it again (`compiler/interpreter.py`, `_CHUNK_SLOTS`). The rewrite had
only moved that edge. With the block function in a chunk of its own: 6-8 faults a call
either way, and the token 28-38 ms with the pass against 33-42 without (one process, caller
stack depths 0-63, 2-core Xeon).
On CUDA, a masked GQA attention may also leave the memory-efficient kernel for the math one.

Matched only when the structure proves it: the unsqueeze is at dim 2 of a rank-4 value with
a static head count KVH; the expand keeps KVH and adds a static `n_rep`; the view merges
exactly those two dims (its other sizes are the expand's, by the same SSA value or equal
static sizes); K and V repeat by the same `n_rep`; the query has `KVH * n_rep` heads; the
attention has no dropout and is not already GQA. The repeated values stay for any other
reader (dead ones are dropped).
"""
from __future__ import annotations

from dataclasses import dataclass

from spokeshave.compiler.ir import Op, TensorType, Value
from spokeshave.compiler.passmanager import Pass, PassContext
from spokeshave.compiler.rewrite import PatternSet, Rewriter, apply_patterns_greedily, pattern

from .canonicalize import constant_value

ATTENTION = "aten.scaled_dot_product_attention"
_VIEWS = ("aten.view", "aten.reshape", "aten._unsafe_view")


def _tensor(v: Value) -> TensorType | None:
    return v.type if isinstance(v.type, TensorType) else None


def _sizes(op: Op) -> list | None:
    """An expand's or a view's target sizes, as operand values or ints (None: unknown)."""
    t = _tensor(op.result)
    if t is None:
        return None
    if len(op.operands) == 1 + t.rank:
        return list(op.operands[1:])
    listed = op.attributes.get("size", op.attributes.get("shape"))
    return list(listed) if isinstance(listed, list) and len(listed) == t.rank else None


def _same_size(a, b, static_a: int | None, static_b: int | None) -> bool:
    """Two size entries (an SSA value or an int) that are the same size."""
    if a is b or (static_a is not None and static_a == static_b):
        return True
    ca = a if isinstance(a, int) else constant_value(a) if isinstance(a, Value) else None
    cb = b if isinstance(b, int) else constant_value(b) if isinstance(b, Value) else None
    return ca is not None and ca == cb


def repeated_heads(v: Value) -> tuple[Value, int] | None:
    """`(kv, n_rep)` when `v` is `view(expand(unsqueeze(kv, 2)))` repeating each of kv's
    heads `n_rep` times in place (HF's `repeat_kv`), else None."""
    view = v.defining_op
    if view is None or view.name not in _VIEWS:
        return None
    expand = view.operands[0].defining_op
    if expand is None or expand.name != "aten.expand" or len(expand.results) != 1:
        return None
    unsq = expand.operands[0].defining_op
    if unsq is None or unsq.name != "aten.unsqueeze" or unsq.attributes.get("dim") not in (2, -3):
        return None
    kv = unsq.operands[0]
    src, big, out = _tensor(kv), _tensor(expand.result), _tensor(view.result)
    if src is None or big is None or out is None or (src.rank, big.rank, out.rank) != (4, 5, 4):
        return None
    heads, n_rep = src.shape[1], big.shape[2]
    if not isinstance(heads, int) or not isinstance(n_rep, int) or big.shape[1] != heads:
        return None
    if out.shape[1] != heads * n_rep:
        return None
    grow, flat = _sizes(expand), _sizes(view)
    if grow is None or flat is None:
        return None
    # the view keeps the expand's batch, sequence and head-dim sizes: dims (0, 2, 3) <- (0, 3, 4)
    for i, j in ((0, 0), (2, 3), (3, 4)):
        if not _same_size(flat[i], grow[j], out.shape[i], big.shape[j]):
            return None
    return kv, n_rep


@pattern(ATTENTION)
def fold_repeated_kv(op: Op, rw: Rewriter) -> bool:
    """`sdpa(q, repeat_kv(k), repeat_kv(v))` -> `sdpa(q, k, v, enable_gqa=true)`."""
    if op.attributes.get("enable_gqa") or op.attributes.get("dropout_p", 0.0) != 0.0:
        return False
    if len(op.operands) < 3:
        return False
    q = _tensor(op.operands[0])
    k, v = repeated_heads(op.operands[1]), repeated_heads(op.operands[2])
    if q is None or q.rank != 4 or k is None or v is None or k[1] != v[1]:
        return False
    if q.shape[1] != _tensor(op.operands[1]).shape[1]:
        return False
    attrs = dict(op.attributes, enable_gqa=True)
    new = rw.insert_before(op, Op(ATTENTION, [op.operands[0], k[0], v[0], *op.operands[3:]],
                                  [r.type for r in op.results], attrs, loc=op.loc))
    rw.replace_op(op, list(new.results))
    return True


GQA_PATTERNS = PatternSet(fold_repeated_kv)


@dataclass
class GqaAttention(Pass):
    """Fold `repeat_kv` into `scaled_dot_product_attention(enable_gqa=True)`."""

    name = "gqa-attention"

    def run(self, module, ctx: PassContext) -> bool:
        n = apply_patterns_greedily(module, GQA_PATTERNS)
        ctx.stat(self.name, "rewrites", n)
        return n > 0
