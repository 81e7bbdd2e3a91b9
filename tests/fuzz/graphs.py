"""Random IR graphs for differential fuzzing: `fuse` + the CPU backend against the reference.

`graphs()` is a Hypothesis strategy of `Case`s: a function as IR text (the generic syntax
of tests/filecheck), its parameter tensors (a `WeightStore`'s contents, compressed weights
built by the real quantizers of `compiler.numerics`), and how to make its inputs for two
calls with different sizes of its dynamic (`?`) dims. `check.check(case)` runs it through
`fuse` + the CPU backend and the reference interpreter and compares them.

Vocabulary (kept small on purpose: generated C++ is cached on disk by its text, and row
kernels do not depend on sizes, so a small vocabulary of op sequences and attribute
values makes most compiles cache hits):

* feature dims {8, 16, 24, 32, 64}; leading dims static {1, 2, 3, 5} or dynamic (`?`,
  symbols sized {1, 2, 3, 4, 7, 0} per call, the second call another size; inputs
  uniform in [-s, s], s in {1, 3}, some with all-zero rows);
* pointwise: every op the row kernels emit (`backends.rowops.EXPRESSIONS`): unary, binary with
  broadcasting (a pool value, a fresh input or a parameter of a broadcast shape: [D],
  [1, D], [..., 1], size-1 leading dims) and `.Scalar` forms; scalars {0.5, -1.5, 2.0,
  3.0}, alphas {1, 2, 0.5}, exponents {2, 3, 0.5, 1.5, -1, -0.5};
* reductions: layer_norm (weight and bias / weight / none), rms_norm (weight or not,
  eps given or not), softmax (`.int`, `_softmax`), keepdim mean / sum / amax over the last
  dim (as -1 or rank-1), and, rarer, ones the rows kernels do not take (over dim 0, or
  without keepdim); eps {1e-5, 1e-6, 1e-12};
* linears: `aten.linear` (parameter weight, bias or not) and every compressed linear of
  `compiler/dialect/spk.py`: w8, w8a8, w8a8g (activation groups {16, 32, 64} dividing
  K), fp8, w4g (symmetric / asymmetric, groups {8, 16, 32, 64} dividing K), sparse24,
  w8a8_split, w8_split (1-3 outlier columns);
  out-features from the feature-dim vocabulary;
* attention: `aten.scaled_dot_product_attention` on heads split from a [B, L, D] value
  (view + transpose) or on fresh [B, H, L, E] inputs, self or cross (another length),
  without mask, with a float [L, S] / [B, 1, L, S] mask or a bool one, or `is_causal`;
  `scale` absent or 0.5; heads merged back (transpose + reshape);
* views: `aten.view` / `aten.reshape` (flatten the leading dims, split / merge heads),
  `aten.permute` (any permutation, the last dim included), `aten.transpose.int`.

Values carry an estimate of their magnitude so that the generator keeps the computation
well conditioned (exp and softmax only on bounded inputs, log / sqrt / rsqrt / reciprocal /
div / fractional powers on inputs it first makes >= 0.5 with `abs` + `add.Scalar`, products
only while they stay below 1e4): the comparison is of a float32 computation done in two
summation orders, and an ill-conditioned graph would turn rounding into "mismatches".
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st
from spokeshave.compiler.numerics import quant, sparse
from spokeshave.compiler.printer import format_attr_dict
from spokeshave.compiler.target import Target
from spokeshave.costmodel.roofline import RooflineCostModel

FEATURES = (8, 16, 24, 32, 64)
STATIC_DIMS = (1, 2, 3, 5)
SYMBOL_SIZES = (1, 2, 3, 4, 7, 0)  # 0: empty tensors
SCALARS = (0.5, -1.5, 2.0, 3.0)
ALPHAS = (1, 2, 0.5)
EXPONENTS = (2, 3, 0.5, 1.5, -1, -0.5)
EPS = (1e-5, 1e-6, 1e-12)
HEADS = (2, 4)
GROUPS = (8, 16, 32, 64)
# The kernels pick their ISA from the target, so the compressed GEMMs are fuzzed on each
# path this host can run: the host itself (None), AVX-VNNI, AVX2 and scalar, keeping only
# the targets whose features the host has (an AVX2-only CPU would die of an illegal
# instruction in an AVX-VNNI kernel).
_CANDIDATE_TARGETS = ("cpu:x86_64:avx2,fma,avx_vnni,f16c", "cpu:x86_64:avx2,fma,f16c",
                      "cpu:x86_64:sse4_2")
TARGETS = (None, *(t for t in _CANDIDATE_TARGETS
                   if not Target.host().missing(Target.parse(t).features)))

# An int8 quantization is discontinuous: a one-ulp difference in its input can flip a
# rounding and move the output by a whole step. So a w8a8 op's input must be computed
# identically by both sides. Graph inputs are, and so are results of EXACT ops on exact
# values (single IEEE operations without a product, and views): then the prologue / GEMM
# is compared as it is. Any other input (a LayerNorm, a GEMM, a transcendental, a product)
# is also returned by the function and the reference adopts the CPU's value for it when
# that value passes the float tolerance (the interpreter's observer hook substitutes it):
# "compare per op" at exactly the one place where rounding is not continuous, and the w8a8
# op itself is compared at the integer tolerance. Not in EXACT: `add`/`sub` with alpha != 1
# (torch computes `a + alpha * b` with an FMA, the kernels may not), `div.Scalar` (torch
# multiplies by the reciprocal) and products: g++ contracts `a * b + c` across statements
# into an FMA (its C++ default is -ffp-contract=fast, which -std=c++17 does not turn off),
# so a product followed by an add is not torch's two roundings. Each run counts outputs of
# EXACT ops that were not bit-identical (`Result.not_bitwise`); it must stay 0.
EXACT = frozenset({"aten.relu", "aten.neg", "aten.abs", "aten.clone", "aten.maximum",
                   "aten.minimum", "aten.view", "aten.reshape", "aten.permute", "aten.transpose.int"})
EXACT_WITH_UNIT_ALPHA = frozenset({"aten.add.Tensor", "aten.sub.Tensor", "aten.add.Scalar",
                                   "aten.sub.Scalar"})

# fixed machine numbers: fusion decisions never depend on a measurement of the host
# (roofline merges are machine-independent anyway; this also skips the 0.3 s measurement)
COST_MODEL = RooflineCostModel(peak_flops=1e12, bandwidth=1e11)

Dim = Any  # int, or a str: a symbol "s0" or a product "s0*s1*6"


def dim_text(d: Dim) -> str:
    return "?" if isinstance(d, str) else str(d)


def ttype(shape: tuple, dtype: str = "f32") -> str:
    return "tensor<" + "".join(dim_text(d) + "x" for d in shape) + dtype + ">"


def dim_size(d: Dim, sizes: dict[str, int]) -> int:
    if isinstance(d, int):
        return d
    n = 1
    for part in d.split("*"):
        n *= int(part) if part.isdigit() else sizes[part]
    return n


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    syms, const = [], 1
    for d in (a, b):
        for part in str(d).split("*"):
            if part.isdigit():
                const *= int(part)
            else:
                syms.append(part)
    return "*".join(sorted(syms) + ([str(const)] if const != 1 else []))


def broadcast(a: tuple, b: tuple) -> tuple | None:
    """Numpy broadcasting on symbolic shapes; None when not provably compatible."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


# ------------------------------------------------------------------ the case


@dataclass
class Val:
    name: str
    shape: tuple
    bound: float          # estimate of max |value|
    exact: bool           # computed bit-identically by both sides
    pos: bool = False     # >= 0.5 everywhere
    family: str = "float"  # tolerance family of this value: float | int
    dtype: str = "f32"


@dataclass
class Input:
    name: str
    shape: tuple
    kind: str = "uniform"   # uniform | zero_rows | positive | mask | bool_mask
    scale: float = 1.0
    dtype: str = "f32"


@dataclass
class Case:
    text: str
    inputs: list[Input]
    weights: dict[str, torch.Tensor]
    sizes: tuple[dict[str, int], dict[str, int]]   # symbol sizes of the two calls
    seed: int
    families: list[str]                             # per output
    observed: list[int]                             # outputs the reference adopts (w8a8 inputs)
    ops: Counter
    exact: list[bool] = field(default_factory=list)  # per output: computed by EXACT ops only
    target: str | None = None                       # None: the host

    def tensors(self, call: int) -> list[torch.Tensor]:
        """The inputs of call `call`: sizes alternate between the two of `sizes`; every call
        draws its own values (calls past the second replay the backend's recording of the
        first two, so they must see new data)."""
        g = torch.Generator().manual_seed(self.seed * 2 + call if call < 2
                                          else (self.seed << 8) + call + (1 << 40))
        out = []
        for inp in self.inputs:
            shape = [dim_size(d, self.sizes[call % 2]) for d in inp.shape]
            if inp.kind == "bool_mask":
                m = torch.rand(shape, generator=g) < 0.6
                if m.shape[-1]:
                    m[..., 0] = True  # no fully masked row (softmax of nothing is NaN)
                out.append(m)
            elif inp.kind == "mask":
                out.append(torch.where(torch.rand(shape, generator=g) < 0.3, -1e4, 0.0)
                           + torch.rand(shape, generator=g))
            elif inp.kind == "positive":
                out.append(torch.rand(shape, generator=g) * 1.5 + 0.5)
            elif inp.kind == "zero_rows":  # some rows all zero: w8a8's scale-1 rows, constant norms
                t = (torch.rand(shape, generator=g) * 2 - 1) * inp.scale
                out.append(t * (torch.rand(shape[:-1] + [1], generator=g) < 0.7))
            else:
                out.append((torch.rand(shape, generator=g) * 2 - 1) * inp.scale)
        return out

    def shapes(self, call: int) -> str:
        return ", ".join(f"%{i.name}: {[dim_size(d, self.sizes[call % 2]) for d in i.shape]}"
                         for i in self.inputs)

    def describe(self) -> str:
        sizes = "; ".join(f"call {c + 1}: " + (", ".join(f"{k}={v}" for k, v in s.items()) or "static")
                          for c, s in enumerate(self.sizes))
        return (f"// seed {self.seed}; target {self.target or 'host'}; symbol sizes {sizes}\n"
                f"// inputs (call 1): {self.shapes(0)}\n// inputs (call 2): {self.shapes(1)}\n{self.text}")

    def __repr__(self) -> str:  # what Hypothesis prints for a falsifying example
        return "Case(\n" + self.describe() + "\n)"


class Builder:
    """Accumulates a function: inputs, parameters, op lines, the pool of values."""

    def __init__(self, draw, wseed: int):
        self.draw = draw
        self.gen = torch.Generator().manual_seed(wseed)
        self.inputs: list[Input] = []
        self.params: dict[str, tuple[str, torch.Tensor]] = {}  # arg name -> (type, tensor)
        self.lines: list[str] = []
        self.pool: list[Val] = []
        self.used: set[str] = set()
        self.symbols: list[str] = []
        self.observe: list[Val] = []
        self.ops: Counter = Counter()
        self.n = 0

    # -------------------------------------------------------------- plumbing

    def new_symbol(self) -> str:
        s = f"s{len(self.symbols)}"
        self.symbols.append(s)
        return s

    def input(self, shape: tuple, kind: str = "uniform", scale: float = 1.0, dtype: str = "f32",
              pool: bool = True) -> Val:
        name = f"x{len(self.inputs)}"
        self.inputs.append(Input(name, tuple(shape), kind, scale, dtype))
        v = Val(name, tuple(shape), bound=2.0 if kind == "positive" else scale, exact=True,
                pos=kind == "positive", dtype=dtype)
        if pool and dtype == "f32" and kind in ("uniform", "zero_rows", "positive"):
            self.pool.append(v)
        return v

    def param(self, stem: str, t: torch.Tensor, dtype: str) -> str:
        name = f"{stem}{len(self.params)}"
        self.params[name] = (ttype(tuple(t.shape), dtype), t)
        return name

    def rand(self, *shape: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen) * (hi - lo) + lo

    def emit(self, op: str, operands: list[Val | str], attrs: dict, shape: tuple, *, bound: float,
             exact: bool | None = None, pos: bool = False, family: str = "float",
             pool: bool = True) -> Val:
        names, types = [], []
        for o in operands:
            if isinstance(o, Val):
                names.append(o.name)
                types.append(ttype(o.shape, o.dtype))
                self.used.add(o.name)
            else:  # a parameter
                names.append(o)
                types.append(self.params[o][0])
        if exact is None:
            vals = [o for o in operands if isinstance(o, Val)]
            exact = ((op in EXACT or (op in EXACT_WITH_UNIT_ALPHA and attrs.get("alpha", 1) == 1))
                     and all(v.exact for v in vals))  # parameters: the same tensor on both sides
        name = f"v{self.n}"
        self.n += 1
        out = Val(name, tuple(shape), bound=bound, exact=exact, pos=pos, family=family)
        a = (" " + format_attr_dict(attrs)) if attrs else ""
        self.lines.append(f'  %{name} = "{op}"({", ".join("%" + n for n in names)}){a} : '
                          f'({", ".join(types)}) -> {ttype(out.shape)}')
        self.ops[op] += 1
        if pool:
            self.pool.append(out)
        return out

    def pick(self, ok=lambda v: True) -> Val | None:
        """A pool value satisfying `ok`, preferring recent ones (shrinks to the last)."""
        cands = [v for v in reversed(self.pool) if ok(v)]
        if not cands:
            return None
        if len(cands) == 1 or self.draw(st.booleans()):  # chains: the latest value, half the time
            return cands[0]
        return cands[self.draw(st.integers(0, len(cands) - 1))]

    def positive(self, v: Val) -> Val:
        """`v`, or `abs(v) + 0.5`: an input for log / sqrt / rsqrt / reciprocal / div."""
        if v.pos:
            return v
        a = self.emit("aten.abs", [v], {}, v.shape, bound=v.bound, pool=False)
        return self.emit("aten.add.Scalar", [a], {"other": 0.5}, v.shape, bound=v.bound + 0.5,
                         pos=True, pool=False)

    def tame(self, v: Val, limit: float) -> Val:
        """`v`, or `tanh(v)` when its magnitude may exceed `limit`."""
        if v.bound <= limit:
            return v
        return self.emit("aten.tanh", [v], {}, v.shape, bound=1.0, pool=False)

    # -------------------------------------------------------------- the text

    def finish(self, seed: int, sizes) -> Case:
        outs = [v for v in self.pool if v.name.startswith("v") and v.name not in self.used]
        if not outs:
            outs = [self.pool[-1]]
        outs = outs[-4:]
        # values also read inside the graph, returned too: results that leave a fused group
        inner = [v for v in self.pool if v.name.startswith("v") and v.name in self.used]
        if inner and self.draw(st.booleans()):
            outs += [v for v in inner if self.draw(st.integers(0, 3)) == 0][-3:]
        outs += [v for v in self.observe if v not in outs]
        families = [v.family for v in outs]
        observed = [i for i, v in enumerate(outs) if v in self.observe]
        args = [f"%{i.name}: {ttype(i.shape, i.dtype)}" for i in self.inputs]
        args += [f'%{n}: {t} {{spk.param = "{n}"}}' for n, (t, _) in self.params.items()]
        rets = [ttype(v.shape) for v in outs]
        ret_sig = rets[0] if len(rets) == 1 else "(" + ", ".join(rets) + ")"
        text = (f"func.func @f({', '.join(args)}) -> {ret_sig} {{\n" + "\n".join(self.lines)
                + f"\n  return {', '.join('%' + v.name for v in outs)} : {', '.join(rets)}\n}}\n")
        weights = {n: t for n, (_, t) in self.params.items()}
        return Case(text, self.inputs, weights, sizes, seed, families, observed, self.ops,
                    [v.exact for v in outs])


# ------------------------------------------------------------------ op families

UNARY = ("aten.relu", "aten.neg", "aten.abs", "aten.clone", "aten.silu", "aten.gelu",
         "aten.tanh", "aten.sigmoid", "aten.erf", "aten.exp", "aten.log", "aten.sqrt",
         "aten.rsqrt", "aten.reciprocal", "aten.pow.Tensor_Scalar")
_NEEDS_POSITIVE = ("aten.log", "aten.sqrt", "aten.rsqrt", "aten.reciprocal")


def unary(b: Builder) -> None:
    x = b.pick()
    name = b.draw(st.sampled_from(UNARY))
    attrs: dict = {}
    if name in _NEEDS_POSITIVE:
        x = b.positive(x)
    if name == "aten.exp":
        x = b.tame(x, 8.0)
    bound, pos = x.bound, False
    if name == "aten.gelu":
        if b.draw(st.booleans()):
            attrs["approximate"] = "tanh"
    elif name in ("aten.tanh", "aten.sigmoid", "aten.erf"):
        bound = 1.0
    elif name == "aten.exp":
        bound = math.exp(x.bound)
    elif name == "aten.log":
        bound = max(0.7, math.log(x.bound))
    elif name == "aten.sqrt":
        bound, pos = math.sqrt(x.bound), True
    elif name in ("aten.rsqrt", "aten.reciprocal"):
        bound = 2.0
    elif name == "aten.pow.Tensor_Scalar":
        e = b.draw(st.sampled_from(EXPONENTS))
        if e != int(e) or e < 0:
            x = b.positive(x)
        if e > 0 and x.bound ** e > 1e4:
            x = b.tame(x, 4.0)
            if e != int(e):
                x = b.positive(x)
        attrs["exponent"] = e
        bound = x.bound ** e if e > 0 else 2.0 ** -e
    b.emit(name, [x], attrs, x.shape, bound=bound, pos=pos)


def scalar(b: Builder) -> None:
    x = b.pick()
    name = b.draw(st.sampled_from(("aten.mul.Scalar", "aten.add.Scalar", "aten.sub.Scalar",
                                   "aten.div.Scalar")))
    c = b.draw(st.sampled_from(SCALARS))
    attrs: dict = {"other": c}
    if name in ("aten.add.Scalar", "aten.sub.Scalar"):
        alpha = b.draw(st.sampled_from(ALPHAS))
        if alpha != 1:
            attrs["alpha"] = alpha
        bound = x.bound + abs(c * alpha)
    elif name == "aten.mul.Scalar":
        bound = x.bound * abs(c)
    else:
        bound = x.bound / abs(c)
    b.emit(name, [x], attrs, x.shape, bound=bound)


BINARY = ("aten.add.Tensor", "aten.mul.Tensor", "aten.sub.Tensor", "aten.maximum",
          "aten.minimum", "aten.div.Tensor")


def _broadcast_shape_of(b: Builder, shape: tuple) -> tuple:
    """A shape broadcasting with `shape`: some dims made 1, leading dims dropped, or (grow)
    its size-1 dims made larger (static or dynamic) and a leading dim added."""
    kind = b.draw(st.sampled_from(("same", "row", "col", "ones", "drop", "grow", "grow")))
    if kind == "same":
        return shape
    if kind == "grow":     # the other way round: size-1 dims of `shape` become larger
        def grown(d):
            if d != 1 or b.draw(st.booleans()):
                return d
            choice = b.draw(st.sampled_from(tuple(b.symbols) + (3, "new")))
            return b.new_symbol() if choice == "new" else choice
        out = tuple(grown(d) for d in shape[:-1]) + shape[-1:]
        if len(out) < 4 and b.draw(st.booleans()):
            out = (b.draw(st.sampled_from((2,) + tuple(b.symbols))),) + out
        return out
    if kind == "row":      # [..., 1]: one value per row
        return shape[:-1] + (1,)
    if kind == "col":      # [D]: one value per column
        return shape[-1:]
    if kind == "drop":
        return shape[b.draw(st.integers(1, len(shape))) - 1:] if len(shape) > 1 else shape
    return tuple(1 if b.draw(st.booleans()) else d for d in shape)


def binary(b: Builder) -> None:
    x = b.pick()
    name = b.draw(st.sampled_from(BINARY))
    src = b.draw(st.sampled_from(("pool", "input", "param")))
    y = None
    if src == "pool":
        y = b.pick(lambda v: v is not x and broadcast(x.shape, v.shape) is not None
                   and v.bound * x.bound < 1e4)
    if y is None and src != "param":
        shape = _broadcast_shape_of(b, x.shape)
        y = b.input(shape, "positive" if name == "aten.div.Tensor" else "uniform",
                    b.draw(st.sampled_from((1.0, 3.0))), pool=False)
    if y is None:
        d = x.shape[-1]
        shape = (d,) if isinstance(d, int) else (1,)
        if b.draw(st.booleans()) and isinstance(d, int):
            shape = (1, d)
        t = b.rand(*shape, lo=0.5, hi=2.0) if name == "aten.div.Tensor" else b.rand(*shape)
        pname = b.param("p", t, "f32")
        y = Val(pname, shape, bound=2.0 if name == "aten.div.Tensor" else 1.0, exact=True,
                pos=name == "aten.div.Tensor")
        operand = pname
    else:
        operand = y
    if b.draw(st.booleans()) and isinstance(operand, Val) and broadcast(y.shape, x.shape) is not None:
        x, operand, y = y, x, x  # the broadcast operand first
    if name == "aten.div.Tensor" and not y.pos:
        y = b.positive(y)
        operand = y
    shape = broadcast(x.shape, y.shape)
    attrs: dict = {}
    if name in ("aten.add.Tensor", "aten.sub.Tensor"):
        alpha = b.draw(st.sampled_from(ALPHAS))
        if alpha != 1:
            attrs["alpha"] = alpha
        bound = x.bound + abs(alpha) * y.bound
    elif name == "aten.mul.Tensor":
        bound = x.bound * y.bound
    elif name == "aten.div.Tensor":
        bound = x.bound * 2.0
    else:
        bound = max(x.bound, y.bound)
    b.emit(name, [x, operand], attrs, shape, bound=bound)


def _last_dim(b: Builder, rank: int) -> int:
    return -1 if b.draw(st.booleans()) else rank - 1


def reduction(b: Builder) -> None:
    name = b.draw(st.sampled_from(("aten.layer_norm", "aten.softmax.int", "aten.rms_norm",
                                   "aten.mean.dim", "aten.amax", "aten.sum.dim_IntList",
                                   "aten._softmax", "other")))
    if name in ("aten.layer_norm", "aten.rms_norm"):
        x = b.pick(lambda v: isinstance(v.shape[-1], int))
        if x is None:
            return unary(b)
        d = x.shape[-1]
        attrs: dict = {"normalized_shape": [d]}
        operands: list = [x]
        affine = b.draw(st.sampled_from(("weight", "none", "bias") if name == "aten.layer_norm"
                                        else ("weight", "none")))
        gmax = 1.0
        if affine in ("weight", "bias"):
            operands.append(b.param("g", b.rand(d, lo=0.5, hi=1.5), "f32"))
            gmax = 1.5
        if affine == "bias":
            operands.append(b.param("b", b.rand(d), "f32"))
        eps = b.draw(st.sampled_from(EPS + ((None,) if name == "aten.rms_norm" else ())))
        if eps is not None:
            attrs["eps"] = eps
        b.emit(name, operands, attrs, x.shape, bound=4.0 * gmax + 1.0, exact=False)
    elif name in ("aten.softmax.int", "aten._softmax"):
        x = b.tame(b.pick(), 30.0)
        attrs = {"dim": _last_dim(b, len(x.shape)) if name == "aten.softmax.int" else len(x.shape) - 1}
        if name == "aten._softmax":
            attrs["half_to_float"] = False
        b.emit(name, [x], attrs, x.shape, bound=1.0, exact=False)
    elif name in ("aten.mean.dim", "aten.amax", "aten.sum.dim_IntList"):
        x = b.pick()
        d = x.shape[-1]
        if name == "aten.sum.dim_IntList" and x.bound * (d if isinstance(d, int) else 8) > 1e4:
            name = "aten.mean.dim"
        bound = x.bound * (d if isinstance(d, int) else 8) if name == "aten.sum.dim_IntList" else x.bound
        b.emit(name, [x], {"dim": [_last_dim(b, len(x.shape))], "keepdim": True},
               x.shape[:-1] + (1,), bound=bound, exact=False)
    else:  # reductions the rows kernels do not take: over dim 0, or without keepdim
        x = b.pick(lambda v: len(v.shape) >= 2)
        if x is None:
            return unary(b)
        if b.draw(st.booleans()):
            b.emit("aten.mean.dim", [x], {"dim": [0], "keepdim": True}, (1,) + x.shape[1:],
                   bound=x.bound, exact=False)
        else:
            b.emit("aten.amax", [x], {"dim": [-1]}, x.shape[:-1], bound=x.bound, exact=False)


ACT_QUANTIZED = ("spk.linear_w8a8", "spk.linear_w8a8g", "spk.linear_w8a8_split")
COMPRESSED = ("spk.linear_w8", "spk.linear_w8a8", "spk.linear_w8a8g", "spk.linear_fp8",
              "spk.linear_w4g", "spk.linear_sparse24", "spk.linear_w8a8_split", "spk.linear_w8_split")
ACT_GROUPS = (16, 32, 64)   # w8a8g: whole vectors of every ISA


def linear(b: Builder) -> None:
    """One linear, or two or three of one kind on the same input (Q, K, V after one norm:
    a shared w8a8 prologue), a compressed one maybe with `lorc`'s correction."""
    name = b.draw(st.sampled_from(("aten.linear",) + COMPRESSED))
    if name == "aten.linear":
        x = b.pick(lambda v: isinstance(v.shape[-1], int) and v.bound < 1e3)
    else:
        align = 16 if name == "spk.linear_w8a8g" else 8
        x = b.pick(lambda v: isinstance(v.shape[-1], int) and v.shape[-1] % align == 0 and v.bound < 1e3)
    if x is None:
        return unary(b)
    if name in ACT_QUANTIZED and b.draw(st.booleans()):  # a norm first: the w8a8 prologue
        norm = b.draw(st.sampled_from(("aten.layer_norm", "aten.rms_norm")))
        g = b.param("g", b.rand(k := x.shape[-1], lo=0.5, hi=1.5), "f32")
        x = b.emit(norm, [x, g], {"normalized_shape": [k], "eps": 1e-5}, x.shape, bound=7.0,
                   exact=False, pool=False)
    for _ in range(b.draw(st.sampled_from((1, 1, 2, 3)))):
        _one_linear(b, name, x)


def _one_linear(b: Builder, name: str, x: Val) -> None:
    k = x.shape[-1]
    n = b.draw(st.sampled_from(FEATURES))
    w = b.rand(n, k) / math.sqrt(k)
    has_bias = b.draw(st.booleans())
    bias = b.rand(n) * 0.5 if has_bias else None
    attrs: dict = {}
    tensors: list[tuple[str, torch.Tensor, str]] = []  # (stem, tensor, dtype)
    family = "float"
    if name == "aten.linear":
        tensors.append(("w", w, "f32"))
    elif name in ("spk.linear_w8", "spk.linear_w8a8"):
        q, s = quant.quantize_int8_per_channel(w)
        tensors += [("qw", q, "i8"), ("sc", s, "f32")]
        family = "int" if name == "spk.linear_w8a8" else "float"
    elif name == "spk.linear_w8a8g":
        q, s = quant.quantize_int8_per_channel(w)
        tensors += [("qw", q, "i8"), ("sc", s, "f32")]
        attrs = {"group": b.draw(st.sampled_from([g for g in ACT_GROUPS if k % g == 0]))}
        family = "int"
    elif name == "spk.linear_fp8":
        q, s = quant.quantize_fp8_per_channel(w)
        tensors += [("qw", q, "f8E4M3FN"), ("sc", s, "f32")]
    elif name == "spk.linear_w4g":
        group = b.draw(st.sampled_from([g for g in GROUPS if k % g == 0]))
        symmetric = b.draw(st.booleans())
        params = quant.int4_group_params(w, group, symmetric)
        codes = quant.int4_codes(w, params)
        tensors += [("qw", quant.pack_int4(codes), "ui8"), ("sc", params.scale.float(), "f32")]
        if not symmetric:
            tensors.append(("zp", params.zero, "ui8"))
        attrs = {"group": group, "symmetric": symmetric}
    elif name == "spk.linear_sparse24":
        values, meta = sparse.compress_24(w, sparse.mask_topk_24(w.abs()))
        tensors += [("sv", values, "f32"), ("sm", meta, "ui8")]
    else:  # the LLM.int8() splits: outlier columns in float, the rest int8
        m = b.draw(st.integers(1, 3))
        idx = torch.randperm(k, generator=b.gen)[:m].sort().values
        w[:, idx] *= 8.0
        rest = w.clone()
        rest[:, idx] = 0
        q, s = quant.quantize_int8_per_channel(rest)
        tensors += [("qw", q, "i8"), ("sc", s, "f32"), ("ow", w[:, idx].clone(), "f32"),
                    ("oi", idx.to(torch.int64), "i64")]
    operands: list = [x] + [b.param(stem, t, dt) for stem, t, dt in tensors]
    if bias is not None:
        operands.append(b.param("bias", bias, "f32"))
    if name in ACT_QUANTIZED and not x.exact and x not in b.observe:
        b.observe.append(x)
    bound = 2.0 * x.bound * (8.0 if "split" in name else 1.0) + 0.5
    lorc = name != "aten.linear" and b.draw(st.integers(0, 3)) == 0
    y = b.emit(name, operands, attrs, x.shape[:-1] + (n,), bound=bound, exact=False, family=family,
               pool=not lorc)
    if lorc:  # lorc's correction: linear(linear(x, B), A) added to the result
        r = b.draw(st.sampled_from((2, 4)))
        lb = b.param("lb", b.rand(r, k) / math.sqrt(k), "f32")
        la = b.param("la", b.rand(n, r) * 0.1, "f32")
        t = b.emit("aten.linear", [x, lb], {}, x.shape[:-1] + (r,), bound=x.bound, exact=False, pool=False)
        c = b.emit("aten.linear", [t, la], {}, x.shape[:-1] + (n,), bound=x.bound, exact=False, pool=False)
        b.emit("aten.add.Tensor", [y, c], {}, y.shape, bound=bound + x.bound, exact=False)


def view(b: Builder) -> None:
    kind = b.draw(st.sampled_from(("permute", "flatten", "split", "merge", "transpose")))
    x = b.pick()
    r = len(x.shape)
    op = b.draw(st.sampled_from(("aten.view", "aten.reshape")))
    key = "size" if op == "aten.view" else "shape"
    syms = [d for d in x.shape[:-1] if isinstance(d, str)]
    if kind == "permute" and r >= 2:
        perm = b.draw(st.permutations(range(r)))
        b.emit("aten.permute", [x], {"dims": list(perm)}, tuple(x.shape[p] for p in perm), bound=x.bound)
    elif kind == "transpose" and r >= 2:
        i, j = b.draw(st.sampled_from([(i, j) for i in range(r) for j in range(i + 1, r)]))
        if b.draw(st.booleans()):
            i, j = i - r, j - r  # negative dims
        s = list(x.shape)
        s[i], s[j] = s[j], s[i]
        b.emit("aten.transpose.int", [x], {"dim0": i, "dim1": j}, tuple(s), bound=x.bound)
    elif kind == "flatten" and r >= 3 and isinstance(x.shape[-1], int):
        lead = x.shape[0]
        for d in x.shape[1:-1]:
            lead = dim_mul(lead, d)
        b.emit(op, [x], {key: [-1 if isinstance(lead, str) else lead, x.shape[-1]]},
               (lead, x.shape[-1]), bound=x.bound)
    elif (kind == "split" and isinstance(x.shape[-1], int) and len(syms) <= 1 and r <= 3
          and x.shape[-1] % 2 == 0):
        h = b.draw(st.sampled_from([h for h in HEADS if x.shape[-1] % h == 0]))
        size = [-1 if isinstance(d, str) else d for d in x.shape[:-1]] + [h, x.shape[-1] // h]
        b.emit(op, [x], {key: size}, x.shape[:-1] + (h, x.shape[-1] // h), bound=x.bound)
    elif kind == "merge" and r >= 3 and all(isinstance(d, int) for d in x.shape[-2:]) and len(syms) <= 1:
        size = [-1 if isinstance(d, str) else d for d in x.shape[:-2]] + [x.shape[-2] * x.shape[-1]]
        b.emit(op, [x], {key: size}, x.shape[:-2] + (x.shape[-2] * x.shape[-1],), bound=x.bound)
    else:
        unary(b)


ATTENTION = "aten.scaled_dot_product_attention"


def attention(b: Builder) -> None:
    """sdpa on heads split from a [B, L, D] pool value, or on fresh [B, H, L, E] inputs."""
    x = b.pick(lambda v: len(v.shape) == 3 and isinstance(v.shape[-1], int) and v.shape[-1] % 4 == 0
               and not isinstance(v.shape[0], str))
    bsz = x.shape[0] if x is not None else b.draw(st.sampled_from((1, 2)))
    h = b.draw(st.sampled_from(HEADS))
    cross = b.draw(st.booleans())

    def heads(v: Val) -> Val:
        d = v.shape[-1]
        size = [-1 if isinstance(s, str) else s for s in v.shape[:-1]] + [h, d // h]  # B is static
        t = b.emit("aten.view", [v], {"size": size}, v.shape[:-1] + (h, d // h), bound=v.bound, pool=False)
        return b.emit("aten.transpose.int", [t], {"dim0": 1, "dim1": 2},
                      (v.shape[0], h, v.shape[1], d // h), bound=v.bound, pool=False)
    if x is not None and b.draw(st.integers(0, 3)) > 0:
        x = b.tame(x, 4.0)
        q = heads(x)
        if cross:
            length = b.draw(st.sampled_from(tuple(b.symbols) + STATIC_DIMS + ("new",)))
            if length == "new":
                length = b.new_symbol()
            kv = b.input((bsz, length, x.shape[-1]), pool=False)
            k, v = heads(kv), heads(kv)
        else:
            k = v = q
        from_pool = True
    else:
        e = b.draw(st.sampled_from((8, 16)))
        length = b.draw(st.sampled_from(tuple(b.symbols) + STATIC_DIMS[1:] + ("new",)))
        if length == "new":
            length = b.new_symbol()
        q = b.input((bsz, h, length, e), pool=False)
        klen = b.new_symbol() if cross and b.draw(st.booleans()) else length
        k = b.input((bsz, h, klen, e), pool=False)
        v = b.input((bsz, h, klen, b.draw(st.sampled_from((8, 16)))), pool=False)
        from_pool = False
    L, S = q.shape[2], k.shape[2]
    operands = [q, k, v]
    attrs: dict = {}
    mask = b.draw(st.sampled_from(("none", "float", "causal", "bool", "float4")))
    if mask == "float":
        operands.append(b.input((L, S), "mask", pool=False))
    elif mask == "float4":
        operands.append(b.input((q.shape[0], 1, L, S), "mask", pool=False))
    elif mask == "bool":
        operands.append(b.input((L, S), "bool_mask", dtype="i1", pool=False))
    elif mask == "causal":
        attrs["is_causal"] = True
    if b.draw(st.booleans()):
        attrs["scale"] = 0.5
    out_shape = q.shape[:3] + (v.shape[-1],)
    y = b.emit(ATTENTION, operands, attrs, out_shape, bound=v.bound, exact=False, pool=not from_pool)
    if from_pool:
        t = b.emit("aten.transpose.int", [y], {"dim0": 1, "dim1": 2},
                   (y.shape[0], y.shape[2], y.shape[1], y.shape[3]), bound=y.bound, pool=False)
        size = [y.shape[0], -1, h * y.shape[3]]
        b.emit("aten.reshape", [t], {"shape": size}, (y.shape[0], y.shape[2], h * y.shape[3]),
               bound=y.bound)


# weights by repetition (sampled_from is uniform; shrinking moves towards the front)
FAMILIES = (unary, binary, scalar, reduction, linear, view, attention,
            unary, binary, reduction, linear, linear, binary, view)


# ------------------------------------------------------------------ the strategy


@st.composite
def graphs(draw, max_steps: int = 8) -> Case:
    wseed = draw(st.integers(0, 2**16))
    b = Builder(draw, wseed)
    d = draw(st.sampled_from(FEATURES))
    rank = draw(st.sampled_from((3, 2, 3)))
    shape = []
    for _ in range(rank - 1):
        if draw(st.booleans()):
            shape.append(draw(st.sampled_from(tuple(b.symbols) + ("new",))) if b.symbols else "new")
            if shape[-1] == "new":
                shape[-1] = b.new_symbol()
        else:
            shape.append(draw(st.sampled_from(STATIC_DIMS)))
    b.input(tuple(shape) + (d,), draw(st.sampled_from(("uniform", "zero_rows"))),
            scale=draw(st.sampled_from((1.0, 3.0))))
    for _ in range(draw(st.integers(1, max_steps))):
        draw(st.sampled_from(FAMILIES))(b)
    first = {s: draw(st.sampled_from(SYMBOL_SIZES)) for s in b.symbols}
    second = {s: draw(st.sampled_from(SYMBOL_SIZES)) for s in b.symbols}
    if b.symbols and second == first:
        s = b.symbols[0]
        second[s] = SYMBOL_SIZES[(SYMBOL_SIZES.index(first[s]) + 1) % len(SYMBOL_SIZES)]
    case = b.finish(draw(st.integers(0, 2**16)), (first, second))
    if any(op.startswith("spk.") for op in b.ops):
        case.target = draw(st.sampled_from(TARGETS))
    return case


def case_from_ir(text: str, inputs: list[tuple[str, tuple]], sizes=({}, {}),
                 weights: dict[str, torch.Tensor] | None = None, seed: int = 0) -> Case:
    """A `Case` written by hand (a regression): inputs as (name, shape with symbols "s0"...),
    every output compared at the float tolerance."""
    n_out = text.split("return", 1)[1].split(":")[0].count("%")
    return Case(text, [Input(n, tuple(shape)) for n, shape in inputs], dict(weights or {}), sizes,
                seed, ["float"] * n_out, [], Counter(), [False] * n_out)

