"""`fold-norms`: fold normalisation scales into the linears that read them (SliceGPT, step 1).

Follows SliceGPT (Ashkboos et al., "SliceGPT: Compress Large Language Models by Deleting
Rows and Columns", ICLR 2024), section 3.2-3.3: a pre-LN transformer computes

    h_{i+1} = h_i + W_out( f( W_in (norm(h_i) * g + b) ) )

and `diag(g)` / `b` can move into `W_in` (`W_in diag(g)`, `c + W_in b`), leaving a scale-free
norm. A LayerNorm `LN(x) = RMSNorm(x - mean(x))` becomes an RMSNorm once the residual stream
is mean-free, which holds when every write into it is: the embedding rows and the output
linears are centred (`E - mean_row(E)`, `(I - 11^T/d) W_out`, `b - mean(b)`). The result is
the same function up to float rounding; it is the form `slice` needs (a scale-free RMSNorm
commutes with any rotation of the stream).

Steps, all exact:
1. Normalise the graph: identity copies and reshapes fold away (as in `canonicalize`);
   GPT-2's Conv1D (`view -> addmm -> view`) becomes `aten.linear` with the transposed
   weight; the pow/mean/add/rsqrt/mul chain HF's LlamaRMSNorm exports to becomes
   `aten.rms_norm` (absorbing the following `weight *` multiply).
2. For every `aten.rms_norm` / `aten.layer_norm` over the last dim whose result is read only
   as the input of `aten.linear`s with parameter weights, fold the scale (and bias) into
   new weight/bias parameters of those linears and drop them from the norm.
3. If the function has a pre-LN residual stream (`ResidualStream`) read only by scale-free
   LayerNorms, centre its writers and turn the LayerNorms into `aten.rms_norm`.

Departures from the paper: it works on the IR (any model whose export has this shape, not
per-architecture adapters); where a norm also feeds something other than linears (post-LN
BERT, whose norm output is the residual itself) it is left alone and a remark says why,
instead of the model being refused (`slice` refuses such models).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.ir import Function, Module, Op, TensorType, Value
from spokeshave.compiler.passmanager import Pass, PassContext
from spokeshave.compiler.rewrite import PatternSet, RewritePattern, Rewriter, apply_patterns_greedily
from spokeshave.compiler.weights import WeightStore

from ._weights import add_param, drop_dead_params, param_base, param_tensor, unused_params
from .canonicalize import fold_identity_copy, fold_identity_reshape

NORM_OPS = ("aten.rms_norm", "aten.layer_norm")
LAYER_NORM_EPS = 1e-5  # aten.layer_norm's schema default (omitted from the attributes)


# ------------------------------------------------------------------ norm ops


@dataclass
class NormParts:
    """An `aten.rms_norm` / `aten.layer_norm` over the last dim, taken apart."""

    op: Op
    input: Value
    weight: Value | None
    bias: Value | None
    eps: float
    dim: int

    @property
    def is_rms(self) -> bool:
        return self.op.name == "aten.rms_norm"


def norm_parts(op: Op) -> NormParts | None:
    """`op` as a NormParts, or None if it is not a last-dim norm in the simple encoding."""
    if op.name not in NORM_OPS or "operand_segments" in op.attributes or not op.operands:
        return None
    x = op.operands[0]
    shape = op.attributes.get("normalized_shape")
    if (not isinstance(x.type, TensorType) or not isinstance(shape, list) or len(shape) != 1
            or x.type.shape[-1] != shape[0] or shape[0] is None):
        return None
    rest = list(op.operands[1:])
    weight = rest[0] if rest else None
    bias = rest[1] if len(rest) > 1 else None
    if op.name == "aten.rms_norm":
        if bias is not None:
            return None
        eps = op.attributes.get("eps")
        if not isinstance(eps, float):  # None: torch uses the dtype's machine epsilon
            eps = torch.finfo(x.type.torch_dtype).eps
    else:
        eps = op.attributes.get("eps", LAYER_NORM_EPS)
    return NormParts(op, x, weight, bias, float(eps), int(shape[0]))


def make_norm(kind: str, x: Value, dim: int, eps: float, weight: Value | None = None,
              like: Op | None = None) -> Op:
    """A new last-dim norm op (`aten.rms_norm` or `aten.layer_norm`) on `x`."""
    attrs: dict = {"normalized_shape": [dim]}
    if kind == "aten.rms_norm":
        attrs["eps"] = float(eps)
    else:
        if like is not None:
            attrs.update({k: v for k, v in like.attributes.items() if k != "normalized_shape"})
        attrs["eps"] = float(eps)
        if attrs["eps"] == LAYER_NORM_EPS:
            del attrs["eps"]
    operands = [x] if weight is None else [x, weight]
    return Op(kind, operands, [x.type], attrs, loc=like.loc if like is not None else None)


# ------------------------------------------------------------------ step 1: normalise


def _single_use(v: Value) -> bool:
    return len(v.uses) == 1


def _float_const(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class MatchRMSNorm(RewritePattern):
    """`x * rsqrt(mean(x^2, -1, keepdim) + eps)` [`* w` or `w *`] -> `aten.rms_norm(x[, w])`."""

    roots = ("aten.mul.Tensor",)

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 2 or op.attributes:
            return False
        for x, r in (op.operands, reversed(op.operands)):
            eps = self._rsqrt_of_mean_square(r, x)
            if eps is not None:
                break
        else:
            return False
        t = x.type
        if not isinstance(t, TensorType) or t.shape[-1] is None or op.result.type != t:
            return False
        d = t.shape[-1]
        weight, out = None, op.result
        if _single_use(out):
            user = out.uses[0]
            if user.name == "aten.mul.Tensor" and len(user.operands) == 2 and not user.attributes:
                other = user.operands[1] if user.operands[0] is out else user.operands[0]
                ot = other.type
                if (other is not out and isinstance(ot, TensorType) and ot.shape == (d,)
                        and ot.dtype == t.dtype and user.result.type == t):
                    weight, op = other, user
        new = rw.insert_before(op, make_norm("aten.rms_norm", x, d, eps, weight))
        new.loc = op.loc
        rw.replace_op(op, [new.result])
        return True

    @staticmethod
    def _rsqrt_of_mean_square(r: Value, x: Value) -> float | None:
        rs = r.defining_op
        if rs is None or rs.name != "aten.rsqrt":
            return None
        add = rs.operands[0].defining_op
        if (add is None or add.name != "aten.add.Tensor" or len(add.operands) != 1
                or set(add.attributes) != {"other"}):
            return None
        eps = _float_const(add.attributes["other"])
        mean = add.operands[0].defining_op
        if eps is None or mean is None or mean.name != "aten.mean.dim":
            return None
        rank = x.type.rank if isinstance(x.type, TensorType) else 0
        dims = mean.attributes.get("dim")
        if (not isinstance(dims, list) or len(dims) != 1 or dims[0] % max(rank, 1) != rank - 1
                or mean.attributes.get("keepdim") is not True or set(mean.attributes) != {"dim", "keepdim"}):
            return None
        pw = mean.operands[0].defining_op
        if (pw is None or pw.name != "aten.pow.Tensor_Scalar" or pw.operands[0] is not x
                or set(pw.attributes) != {"exponent"} or _float_const(pw.attributes["exponent"]) != 2.0):
            return None
        return eps


class AddmmToLinear(RewritePattern):
    """`addmm(b, x2d, W)` with a parameter `W` [K, N] -> `aten.linear(x2d, W^T, b)`; a
    `view(x, [-1, K])` before and a view back to `x`'s leading dims after fold in too
    (GPT-2's Conv1D)."""

    roots = ("aten.addmm",)

    def __init__(self, func: Function, store: WeightStore):
        self.func, self.store = func, store

    def match_and_rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) != 3 or op.attributes:  # beta = alpha = 1
            return False
        b, x2, w = op.operands
        wt = param_tensor(self.func, self.store, w)
        if wt is None or wt.dim() != 2 or b.type.rank != 1:
            return False
        x, out = x2, op.result
        src = x2.defining_op
        n = wt.shape[1]
        if src is not None and src.name in ("aten.view", "aten.reshape", "aten._unsafe_view") \
                and len(src.operands) == 1 and isinstance(src.operands[0].type, TensorType):
            cand = src.operands[0]
            lead = cand.type.shape[:-1]
            if (cand.type.shape[-1] == wt.shape[0] and _single_use(out)
                    and out.uses[0].name in ("aten.view", "aten.reshape", "aten._unsafe_view")
                    and out.uses[0].result.type == cand.type.with_shape(lead + (n,))
                    and len(out.uses[0].operands) == 1):
                x, out = cand, out.uses[0].result
        wv = add_param(self.func, self.store, param_base(self.func, w, "linear") + ".t", wt.t())
        new = Op("aten.linear", [x, wv, b], [out.type], loc=op.loc)
        rw.insert_before(op, new)
        anchor = out.defining_op
        rw.replace_all_uses(out, new.result)
        if anchor is not op:
            rw.erase_op(anchor)
        rw.erase_op(op)
        return True


# ------------------------------------------------------------------ the residual stream


class StreamError(SpokeshaveError):
    """The function has no pre-LN residual stream that SliceGPT's invariance applies to.
    `post_ln` marks the fundamental case (the stream is normalised in place), where no
    rewrite of the graph could help."""

    def __init__(self, message: str, post_ln: bool = False):
        super().__init__(message)
        self.post_ln = post_ln


def _where(op: Op) -> str:
    return f"{op.describe()}"


@dataclass
class ResidualStream:
    """The pre-LN residual stream of a function: values `h_0 .. h_L`, where `h_0` is a sum of
    embeddings (or linears) and `h_{i+1} = adds[i](h_i, branch_i)` with `branch_i` the output
    of one `aten.linear` (the block's output projection). Every use of every `h_i` is the
    next residual add or a normalisation (`readers[i]`); the last is read only by norms."""

    values: list[Value]
    adds: list[Op]
    sources: list[Op]          # embeddings / linears whose sum is h_0
    writers: list[Op]          # writers[i] produces the branch added by adds[i]
    readers: list[list[Op]]    # norm ops reading values[i]

    @property
    def dim(self) -> int:
        return self.values[0].type.shape[-1]

    @staticmethod
    def find(func: Function) -> "ResidualStream":
        """Find the stream, or raise StreamError saying why this function has none."""
        norms = [op for op in func.ops if op.name in NORM_OPS]
        if not norms:
            raise StreamError("the model has no normalisation ops (aten.rms_norm / "
                              "aten.layer_norm), so there is no pre-LN residual stream")
        last = norms[-1]
        h = last.operands[0]
        chain, adds, writers = [h], [], []
        while True:
            op = h.defining_op
            if op is None:
                raise StreamError(f"the input of the last normalisation {_where(last)} is a "
                                  f"function argument, not a residual stream")
            if op.name in NORM_OPS:
                raise StreamError(
                    f"the residual stream passes through the normalisation {_where(op)}: its "
                    f"output is added to the next block's output (a post-LN model, like BERT), "
                    f"so the stream itself is re-normalised, with a per-channel scale, after "
                    f"every block; SliceGPT's invariance needs a pre-LN model whose residual "
                    f"stream is read only through normalisations", post_ln=True)
            if op.name == "aten.embedding":
                sources = [op]
                break
            if op.name != "aten.add.Tensor" or len(op.operands) != 2 or op.attributes:
                raise StreamError(f"the residual stream value read by {_where(last)} comes from "
                                  f"{_where(op)}, which is neither a residual add nor an embedding")
            a, b = op.operands
            wa, wb = _is_writer(a, op), _is_writer(b, op)
            if wa and wb:
                sources = [a.defining_op, b.defining_op]
                break
            if not (wa or wb):
                raise StreamError(f"the residual add {_where(op)} adds no block output: neither "
                                  f"operand comes straight from an aten.linear")
            skip, branch = (b, a) if wa else (a, b)
            adds.append(op)
            writers.append(branch.defining_op)
            h = skip
            chain.append(h)
        chain.reverse()
        adds.reverse()
        writers.reverse()
        d = chain[0].type.shape[-1]
        for v in chain:
            if not isinstance(v.type, TensorType) or v.type.shape[-1] != d or d is None:
                raise StreamError(f"the residual stream changes width ({v.type}); expected "
                                  f"a static last dim {d}")
        stream_adds = set(adds)
        readers: list[list[Op]] = []
        for i, v in enumerate(chain):
            rs = []
            for user in v.uses:
                if user in stream_adds and i < len(adds) and user is adds[i]:
                    continue
                parts = norm_parts(user)
                if parts is None or parts.input is not v or user.operands.count(v) != 1:
                    raise StreamError(f"the residual stream value {i} is read by {_where(user)}, "
                                      f"which is not a normalisation over its last dim: it would "
                                      f"see the rotated stream")
                rs.append(user)
            readers.append(rs)
        if any(v in func.return_op.operands for v in chain):
            raise StreamError("a residual stream value is returned by the function, so its "
                              "basis is observable")
        return ResidualStream(chain, adds, sources, writers, readers)


def _is_writer(v: Value, add: Op) -> bool:
    op = v.defining_op
    return (op is not None and op.name in ("aten.linear", "aten.embedding")
            and len(v.uses) == 1 and v.uses[0] is add)


# ------------------------------------------------------------------ the pass


def _linear_readers(out: Value) -> list[Op] | None:
    """The ops reading `out`, if every one is an `aten.linear` taking it as its input only."""
    users = list(dict.fromkeys(out.uses))
    for u in users:
        if u.name != "aten.linear" or u.operands[0] is not out or out in u.operands[1:]:
            return None
    return users


@dataclass
class FoldNorms(Pass):
    """Fold norm scales/biases into the linears that read them; LayerNorm -> RMSNorm on a
    mean-free pre-LN residual stream."""

    name = "fold-norms"

    def run(self, module: Module, ctx: PassContext) -> bool:
        changed = False
        for func in module.functions:
            unused = unused_params(func)
            n = apply_patterns_greedily(func, PatternSet(fold_identity_copy, fold_identity_reshape,
                                                         MatchRMSNorm(), AddmmToLinear(func, ctx.weights)))
            ctx.stat(self.name, "graph rewrites", n)
            folded = self._fold_scales(func, ctx)
            converted = self._layer_norm_to_rms(func, ctx)
            drop_dead_params(func, ctx.weights, unused)
            changed |= bool(n or folded or converted)
        return changed

    def _fold_scales(self, func: Function, ctx: PassContext) -> int:
        count = 0
        for op in list(func.ops):
            parts = norm_parts(op)
            if parts is None or (parts.weight is None and parts.bias is None):
                continue
            g = param_tensor(func, ctx.weights, parts.weight) if parts.weight is not None else None
            b = param_tensor(func, ctx.weights, parts.bias) if parts.bias is not None else None
            if (parts.weight is not None and g is None) or (parts.bias is not None and b is None):
                ctx.remark(op, f"fold-norms: kept the scale of {_where(op)}: it is not a parameter")
                continue
            linears = _linear_readers(op.result)
            if not linears or any(param_tensor(func, ctx.weights, lin.operands[1]) is None
                                  or (len(lin.operands) > 2
                                      and param_tensor(func, ctx.weights, lin.operands[2]) is None)
                                  for lin in linears):
                ctx.remark(op, f"fold-norms: kept the scale of {_where(op)}: its output is read by "
                           f"something other than linears with parameter weights")
                ctx.stat(self.name, "norms kept")
                continue
            for lin in linears:
                w = param_tensor(func, ctx.weights, lin.operands[1])
                wd = w.double()
                new_w = wd * g.double()[None, :] if g is not None else wd
                operands = [lin.operands[0],
                            add_param(func, ctx.weights, param_base(func, lin.operands[1], "linear.weight")
                                      + ".folded", new_w.to(w.dtype))]
                if b is not None or len(lin.operands) > 2:
                    c = (param_tensor(func, ctx.weights, lin.operands[2]).double() if len(lin.operands) > 2
                         else torch.zeros(w.shape[0], dtype=torch.float64))
                    if b is not None:
                        c = c + wd @ b.double()
                    base = (param_base(func, lin.operands[2], "linear.bias") if len(lin.operands) > 2
                            else param_base(func, lin.operands[1], "linear.weight").removesuffix(".weight")
                            + ".bias")
                    operands.append(add_param(func, ctx.weights, base + ".folded", c.to(w.dtype)))
                lin.operands = operands
            new = make_norm(op.name, parts.input, parts.dim, parts.eps, like=op)
            func.body.insert_before(op, new)
            op.result.replace_all_uses_with(new.result)
            func.body.erase(op)
            ctx.stat(self.name, "norms folded")
            count += 1
        return count

    def _layer_norm_to_rms(self, func: Function, ctx: PassContext) -> int:
        try:
            stream = ResidualStream.find(func)
        except StreamError as e:
            if any(op.name == "aten.layer_norm" for op in func.ops):
                ctx.remark(None, f"fold-norms: LayerNorm kept: {e}")
            return 0
        readers = [r for rs in stream.readers for r in rs]
        if not any(r.name == "aten.layer_norm" for r in readers):
            return 0
        parts = [norm_parts(r) for r in readers]
        why = None
        if any(p.is_rms for p in parts):
            why = "the residual stream is also read by RMSNorms, which centring would change"
        elif any(p.bias is not None for p in parts):
            why = ("a LayerNorm on the residual stream keeps a bias (its output is not read by "
                   "linears only)")
        elif any(param_tensor(func, ctx.weights, _weight_of(w)) is None
                 for w in stream.sources + stream.writers):
            why = "a write into the residual stream has a weight that is not a parameter"
        if why:
            ctx.remark(None, f"fold-norms: LayerNorm kept: {why}")
            return 0
        # Centre every write into the stream: then every h_i is mean-free and LN(h) = RMSNorm(h).
        for w in stream.sources + stream.writers:
            wv = _weight_of(w)
            t = param_tensor(func, ctx.weights, wv)
            td = t.double()
            if w.name == "aten.embedding":
                new = td - td.mean(dim=1, keepdim=True)
            else:
                new = td - td.mean(dim=0, keepdim=True)
            name = param_base(func, wv, "weight") + ".centred"
            w.set_operand(w.operands.index(wv), add_param(func, ctx.weights, name, new.to(t.dtype)))
            if w.name == "aten.linear" and len(w.operands) > 2:
                c = param_tensor(func, ctx.weights, w.operands[2])
                name = param_base(func, w.operands[2], "bias") + ".centred"
                w.set_operand(2, add_param(func, ctx.weights, name,
                                           (c.double() - c.double().mean()).to(c.dtype)))
        for p in parts:
            new = make_norm("aten.rms_norm", p.input, p.dim, p.eps, p.weight, like=p.op)
            func.body.insert_before(p.op, new)
            p.op.result.replace_all_uses_with(new.result)
            func.body.erase(p.op)
        ctx.stat(self.name, "layer norms -> rms norms", len(parts))
        return len(parts)


def _weight_of(op: Op) -> Value:
    """The weight operand of an `aten.embedding` (the table) or an `aten.linear`."""
    return op.operands[0] if op.name == "aten.embedding" else op.operands[1]
