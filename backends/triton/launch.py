"""Launch configurations of the generated GEMMs: ranked by the cost model, the top few timed.

Cost-model-guided autotuning, as Inductor's max-autotune narrows its candidates: for each
GEMM step and size class of its M (the next power of two, so decode and prefill shapes get
their own), every candidate `LaunchConfig` is priced by the roofline cost model's tiled
GEMM term (`costmodel.roofline`: tile re-reads, padding, split-K's partials, wave fill of
the SMs). On a GPU the configurations of the `TOP` cheapest tile shapes are timed on the
call's own tensors (`triton.testing.do_bench`) and the fastest kept, unless a library call
computing the same step is faster (a 2:4 GEMM with no epilogue against torch's
semi-structured kernels). Under the interpreter nothing is timed (a timing there measures
numpy) and the cheapest is taken, which the model prices by tile steps, so the biggest
tiles win.

The choices are cached beside the kernel file: `<kernel file>.launch.json`, keyed by the
target (`Target.key()`), step and M class, written atomically, read back by the next
process that loads the same kernels. Warps and stages do not change a roofline price; they
are told apart by the timing only.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from spokeshave.compiler.cost import Candidate
from spokeshave.compiler.ir import Op
from spokeshave.compiler.target import INTERPRETER_ARCH, Target
from spokeshave.costmodel.roofline import RooflineCostModel

TOP = 3


@dataclass(frozen=True)
class LaunchConfig:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2
    split_k: int = 1       # programs per output tile, each summing a slice of K
    library: str = ""      # "": the generated kernel; else the name of a faster library call


# split-K is offered where the output has few row tiles (decode and short prompts); whether
# a split pays (more programs against the partial tiles' round trip) is the cost model's call
SPLIT_K_MAX_ROWS = 64


def m_class(m: int) -> int:
    """The size class of M a choice is cached for: its next power of two (at least 16)."""
    return max(16, 1 << max(m - 1, 0).bit_length())


def gemm_candidates(m: int, target: Target) -> list[LaunchConfig]:
    """The configurations tried for an M of `m` rows on `target` (tl.dot needs 16 or more
    per side; 128 x 128 x 64 fp32 tiles are what a GPU's registers hold)."""
    splits = (1, 2, 4, 8) if m_class(m) <= SPLIT_K_MAX_ROWS else (1,)
    return [LaunchConfig(bm, bn, bk, warps, stages, split)
            for bm in (16, 32, 64, 128) if bm <= m_class(m)
            for bn in (32, 64, 128) for bk in (32, 64)
            for warps in (4, 8) for stages in (2, 3) for split in splits]


def fits(c: LaunchConfig, k: int, min_block_k: int = 16) -> bool:
    """Whether `c` suits a K of `k`: its K tile at least the format's `min_block_k`, and no
    split-K slice empty (one would be correct, a zero partial, but wasted)."""
    return c.block_k >= min_block_k and c.block_k * c.split_k <= max(k, c.block_k)


def rank(ops: Sequence[Op], m: int, target: Target, model: RooflineCostModel | None = None,
         min_block_k: int = 16) -> list[LaunchConfig]:
    """The candidates that fit the GEMM `ops[0]`, cheapest first by the cost model (stable:
    ties keep their order, so an unsplit K wins a tie)."""
    model = model or RooflineCostModel()
    ops = tuple(ops)
    k = ops[0].operands[0].type.shape[-1]

    def seconds(c: LaunchConfig) -> float:
        cand = Candidate.of(ops, dim_hint=m, rows=m, block_m=c.block_m, block_n=c.block_n,
                            block_k=c.block_k, split_k=c.split_k)
        return model.predict(cand, target).seconds
    every = gemm_candidates(m, target)
    fitting = [c for c in every if fits(c, k, min_block_k)]
    # a candidate list with none that fits (a test's forced tiles): its K tiles raised
    fitting = fitting or [replace(c, block_k=max(c.block_k, min_block_k)) for c in every]
    return sorted(fitting, key=seconds)


class LaunchTuner:
    """The chosen configuration per (step, M class), kept in memory and beside the kernels."""

    def __init__(self, target: Target, path: str | None = None):
        self.target = target
        self.model = RooflineCostModel()
        self.timed = target.device == "cuda" and target.arch != INTERPRETER_ARCH
        self._chosen: dict[str, LaunchConfig] = {}
        self.load(path)

    def load(self, path: str | None) -> None:
        """Read (and from now on write) the choices kept at `path`."""
        self.path = path
        self._load()

    def _load(self) -> None:
        if not self.path or not os.path.isfile(self.path):
            return
        try:
            with open(self.path) as f:
                table = json.load(f).get(self.target.key(), {})
            self._chosen = {k: LaunchConfig(**v) for k, v in table.items()}
        except (OSError, ValueError, TypeError):
            self._chosen = {}  # a corrupt or foreign file: choose again and rewrite it

    def _save(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as f:
                everything = json.load(f)
        except (OSError, ValueError):
            everything = {}
        everything[self.target.key()] = {k: asdict(v) for k, v in sorted(self._chosen.items())}
        folder = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".spk-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as f:
            json.dump(everything, f, indent=1)
        os.replace(tmp, self.path)

    def choose(self, symbol: str, ops: Sequence[Op], m: int,
               launch: Callable[[LaunchConfig], None], min_block_k: int = 16,
               libraries: Mapping[str, Callable[[], None]] | None = None) -> LaunchConfig:
        """The configuration for step `symbol` at `m` rows, its K tile at least `min_block_k`;
        `launch(config)` runs the kernel once with it (for timing on a GPU). `libraries` are
        library calls computing the same step (torch's 2:4 kernels), timed against the best
        configuration on a GPU: the faster is kept (`LaunchConfig.library` names a library
        win). A library call that fails is not a candidate."""
        key = f"{symbol}:m{m_class(m)}"
        got = self._chosen.get(key)
        if got is not None:
            return got
        ranked = rank(ops, m, self.target, self.model, min_block_k)
        best = ranked[0]
        if self.timed:
            from triton.testing import do_bench

            shape = lambda c: (c.block_m, c.block_n, c.block_k, c.split_k)  # noqa: E731
            tiles = list(dict.fromkeys(map(shape, ranked)))[:TOP]
            timed = [c for c in ranked if shape(c) in tiles]
            times = {c: do_bench(lambda c=c: launch(c), warmup=5, rep=20) for c in timed}
            best = min(times, key=times.get)
            fastest = times[best]
            for name, call in (libraries or {}).items():
                try:
                    seconds = do_bench(call, warmup=5, rep=20)
                except Exception:  # noqa: BLE001 - no kernel for this device, dtype or shape
                    continue
                if seconds < fastest:
                    fastest, best = seconds, replace(best, library=name)
        self._chosen[key] = best
        self._save()
        return best
