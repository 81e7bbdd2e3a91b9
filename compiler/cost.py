"""The cost-model protocol: the questions passes ask about what code would cost.

Passes decide through this protocol, never through constants of their own: "is fusing
these two groups cheaper than running them apart", "which tile configuration", "does int4
pay off for this layer at this batch size" are each a comparison of `Cost`s predicted for
`Candidate`s on the compile's `Target`. No cost threshold is hidden in a pass, so a better
model (the learned LightGBM one, `spokeshave.costmodel`) improves every decision at once.

* `Candidate`: one op, or the ops of a would-be fused group in program order, plus a kernel
  configuration and the size assumed for dynamic (`?`) dimensions.
* `Cost`: predicted seconds with the flops and bytes behind them and what bounds them;
  costs add (separate kernels run one after the other) and compare by seconds.
* `CostModel`: anything with a `name` and `predict(candidate, target) -> Cost`.
* `boundary(ops)` (from `compiler.rewrite`, where `outline` uses it too): the only values a
  fused group moves through memory.
* `CostModelAnalysis`: the pass manager's cached view, `ctx.analyses.get(CostModelAnalysis,
  module)`, which memoises predictions until a pass changes the IR.

The core defines the protocol only; implementations live in `spokeshave.costmodel`, which
the front door puts into `ctx.cost_model`. Nothing here imports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol, runtime_checkable

from .errors import SpokeshaveError
from .ir import Module, Op
from .rewrite import boundary  # noqa: F401  (part of this module's interface)
from .target import Target

BOUNDS = ("memory", "compute", "overhead")

@dataclass(frozen=True)
class Candidate:
    """What a cost is asked for: ops (one op, or a would-be fused group in program order),
    a kernel configuration (sorted `(key, value)` pairs: tile sizes, "library",
    "threads"...), and `dim_hint`, the size assumed for every dynamic dimension."""

    ops: tuple[Op, ...]
    config: tuple[tuple[str, Any], ...] = ()
    dim_hint: int = 128

    def __post_init__(self) -> None:
        ops = (self.ops,) if isinstance(self.ops, Op) else tuple(self.ops)
        if not ops or not all(isinstance(op, Op) for op in ops):
            raise SpokeshaveError("a cost candidate needs one or more ops, got "
                                  f"{[type(o).__name__ for o in ops] or 'none'}")
        if len({id(op) for op in ops}) != len(ops):
            raise SpokeshaveError(f"a cost candidate lists an op twice: {[op.name for op in ops]}")
        if isinstance(self.dim_hint, bool) or not isinstance(self.dim_hint, int) or self.dim_hint < 1:
            raise SpokeshaveError(f"dim_hint must be a positive integer, got {self.dim_hint!r}")
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "config", tuple(sorted((str(k), _frozen(v)) for k, v in self.config)))

    @classmethod
    def of(cls, ops: Op | Iterable[Op], *, dim_hint: int = 128, **config: Any) -> "Candidate":
        """`Candidate.of([linear, gelu], tile_m=64, library="onednn")`; `dim_hint` is the
        dynamic-dimension size, not a config key."""
        return cls(ops, tuple(config.items()), dim_hint)

    def config_dict(self) -> dict[str, Any]:
        return dict(self.config)


def _frozen(value: Any) -> Any:
    """Lists in a config become tuples so candidates stay hashable (memo keys)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    return value


@dataclass(frozen=True)
class Cost:
    """A prediction: `seconds`, with the `flops` and `bytes` it assumed and its `bound`
    ("memory", "compute" or "overhead": what dominated). `a + b` is running both (bound of
    the slower); `<`, `<=`, `>`, `>=` compare seconds (`==` compares every field)."""

    seconds: float
    flops: float = 0.0
    bytes: float = 0.0
    bound: str = "overhead"

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            raise SpokeshaveError(f"a cost's bound is one of {', '.join(BOUNDS)}, got {self.bound!r}")

    @staticmethod
    def zero() -> "Cost":
        return Cost(0.0, 0.0, 0.0, "overhead")

    def __add__(self, other: "Cost") -> "Cost":
        if not isinstance(other, Cost):
            return NotImplemented
        bound = self.bound if self.seconds >= other.seconds else other.bound
        return Cost(self.seconds + other.seconds, self.flops + other.flops,
                    self.bytes + other.bytes, bound)

    def __radd__(self, other: Any) -> "Cost":
        if other == 0:  # sum(costs) starts from 0
            return self
        return NotImplemented

    def __lt__(self, other: "Cost") -> bool:
        return self.seconds < other.seconds if isinstance(other, Cost) else NotImplemented

    def __le__(self, other: "Cost") -> bool:
        return self.seconds <= other.seconds if isinstance(other, Cost) else NotImplemented

    def __gt__(self, other: "Cost") -> bool:
        return self.seconds > other.seconds if isinstance(other, Cost) else NotImplemented

    def __ge__(self, other: "Cost") -> bool:
        return self.seconds >= other.seconds if isinstance(other, Cost) else NotImplemented


@runtime_checkable
class CostModel(Protocol):
    """Predicts what a candidate kernel costs on a target."""

    name: str

    def predict(self, candidate: Candidate, target: Target) -> Cost: ...


class CostModelAnalysis:
    """The cost model as the pass manager's analysis: `ctx.analyses.get(CostModelAnalysis,
    module)`. It binds `ctx.cost_model` to the compile's target (`ctx.target` when it is a
    `Target`, else the host) and memoises predictions per (ops, config, dim_hint).

    Ops are keyed by identity, which is right for as long as the analysis lives: the pass
    manager drops it after any pass that changes the IR. A pass that rewrites ops in place
    and asks again in the same run calls `forget()` first."""

    def __init__(self, module: Module, ctx: Any):
        model = getattr(ctx, "cost_model", None)
        if model is None:
            raise SpokeshaveError("no cost model was configured: set ctx.cost_model (spokeshave.compile "
                                  "sets one; outside it use e.g. spokeshave.costmodel.roofline."
                                  "RooflineCostModel())")
        if not isinstance(model, CostModel):
            raise SpokeshaveError(f"ctx.cost_model must have a name and predict(candidate, target); got "
                                  f"{type(model).__name__}")
        target = getattr(ctx, "target", None)
        self.module = module
        self.model: CostModel = model
        self.target: Target = target if isinstance(target, Target) else Target.host()
        self._memo: dict[Candidate, Cost] = {}

    def cost(self, ops: Op | Iterable[Op], *, dim_hint: int = 128, **config: Any) -> Cost:
        """The predicted cost of running `ops` as one kernel with this configuration."""
        return self.predict(Candidate.of(ops, dim_hint=dim_hint, **config))

    def predict(self, candidate: Candidate) -> Cost:
        """`model.predict(candidate, target)`, memoised."""
        try:
            return self._memo[candidate]
        except KeyError:
            pass
        except TypeError:
            raise SpokeshaveError(f"a kernel configuration must be hashable to be memoised, got "
                                  f"{candidate.config_dict()!r}") from None
        cost = self.model.predict(candidate, self.target)
        if not isinstance(cost, Cost):
            raise SpokeshaveError(f"cost model '{getattr(self.model, 'name', '?')}' returned "
                                  f"{type(cost).__name__}, not a Cost")
        self._memo[candidate] = cost
        return cost

    def forget(self) -> None:
        """Drop every memoised prediction (after rewriting ops in place)."""
        self._memo.clear()
