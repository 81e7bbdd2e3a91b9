"""Passes, the pass registry, textual pipelines, analyses and the pass manager.

A pass is a dataclass whose fields are its options (xDSL style) and whose `name` is its
pipeline spelling; `register_pass` puts it in a registry (`PASSES`, filled with the built-in
passes by `spokeshave.load_builtin()`), which makes it reachable from text. A pipeline is text, as in
`mlir-opt`: `"canonicalize,cse,dce"`, `"quantize{scheme=w8a8 group=128}"`. Option names may
use `-` or `_`; inside braces options are separated by spaces or commas. `print_pipeline`
writes the canonical form (non-default options only), which parses back to equal passes.
"""
from __future__ import annotations

import dataclasses
import io
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TextIO

from .errors import Diagnostic, PipelineError, SpokeshaveError, VerifyError
from .ir import Function, Module, Op
from .registry import Registry
from .report import LayerEntry
from .target import Target
from .weights import WeightStore

# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class Range:
    """The allowed interval of a numeric option; `None` leaves a side open-ended."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if v != v:  # NaN is in no range
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def describe(self, integer: bool) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            if integer and self.lo == 1 and not self.lo_open:
                return "a positive integer"
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{'<' if self.hi_open else '<='} {self.hi:g}"


def option(default: Any, *, choices: Any = None, range: Range | None = None, help: str = "",
           why: str = "") -> Any:
    """A pass option: a dataclass field whose metadata `Pass.validate` checks. `choices` is a
    tuple or a function returning one (for registries that grow, like quantization schemes);
    `why` is added to a range error to say what the option means."""
    return field(default=default, metadata={"choices": choices, "range": range, "help": help,
                                            "why": why})


def _choices(f: dataclasses.Field) -> tuple | None:
    c = f.metadata.get("choices")
    return tuple(c()) if callable(c) else c


# ------------------------------------------------------------------ passes & registry


class Pass:
    """Base of all passes. Subclasses are dataclasses; fields are options (see `option`).

    `run` returns False when it changed nothing (all analyses stay valid); anything else
    invalidates every analysis not listed in `preserves`. `statistics()` names the
    calibration statistics the pass reads, so calibration collects only what the pipeline
    needs. A pass with `needs_unfused` rewrites ops that fusion moves into regions, so the
    pass manager refuses to run it on a module that already has them. A pass that is not
    `layer_local` rewrites across layers (SliceGPT rotates the whole residual stream), so it
    cannot run on one layer at a time as streaming compilation does."""

    name: ClassVar[str] = ""
    preserves: ClassVar[tuple[type, ...]] = ()
    needs_unfused: ClassVar[bool] = False
    layer_local: ClassVar[bool] = True
    reads_originals: ClassVar[bool] = False  # reads the float weights others replaced

    def run(self, module: Module, ctx: "PassContext") -> bool | None:
        raise NotImplementedError

    def statistics(self) -> frozenset[str]:
        return frozenset()

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            choices = _choices(f)
            if choices is not None and v not in choices:
                raise PipelineError(f"pass '{self.name}': option '{_opt(f.name)}' must be one of "
                                    f"{', '.join(map(str, choices))}; got {v!r}")
            rng = f.metadata.get("range")
            if rng is not None and not rng.contains(v):
                why = f" ({f.metadata['why']})" if f.metadata.get("why") else ""
                raise PipelineError(f"pass '{self.name}': option '{_opt(f.name)}' must be "
                                    f"{rng.describe(isinstance(v, int))}{why}; got {v!r}")


PASSES: Registry[type[Pass]] = Registry("pass")


def register_pass(cls: type[Pass], registry: Registry[type[Pass]] | None = None) -> type[Pass]:
    """Make `cls` (a dataclass with a `name`) reachable from pipelines."""
    if not dataclasses.is_dataclass(cls) or not cls.name:
        raise TypeError(f"{cls.__name__} must be a dataclass with a `name`")
    return (PASSES if registry is None else registry).register(cls.name, cls)


def _opt(field_name: str) -> str:
    return field_name.replace("_", "-")


def describe_options(cls: type[Pass]) -> str:
    fs = dataclasses.fields(cls)
    if not fs:
        return "(no options)"
    parts = []
    for f in fs:
        choices = _choices(f)
        kind = "|".join(map(str, choices)) if choices else f.type if isinstance(f.type, str) else f.type.__name__
        rng = f.metadata.get("range")
        if rng is not None:
            kind += " " + rng.describe(integer=False)
        parts.append(f"{_opt(f.name)}=<{kind}> (default {f.default!r})")
    return ", ".join(parts)


# ------------------------------------------------------------------ pipeline text


def _split_top(text: str, seps: str) -> list[tuple[str, int]]:
    """Split at separator chars outside braces and quotes; keeps each piece's offset."""
    out, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        elif ch in seps and depth == 0:
            out.append((text[start:i], start))
            start = i + 1
    out.append((text[start:], start))
    return [(s, o) for s, o in out if s.strip()]


def _convert(cls: type[Pass], f: dataclasses.Field, raw: str) -> Any:
    t = f.type if isinstance(f.type, str) else f.type.__name__
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        raw = raw[1:-1]
    try:
        if t == "bool":
            if raw.lower() in ("true", "1", "yes", ""):
                return True
            if raw.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
    except ValueError:
        raise PipelineError(f"pass '{cls.name}': option '{_opt(f.name)}' expects {t}, got {raw!r}") from None
    return raw


def parse_pipeline(text: str, registry: Registry[type[Pass]] | None = None) -> list[Pass]:
    """`"canonicalize,cse,quantize{scheme=w8a8}"` -> pass instances (options validated),
    from `registry` (default: the process-wide `PASSES`)."""
    known = PASSES if registry is None else registry
    body = text.strip()
    m = re.fullmatch(r"(?:builtin\.module|func\.func)\((.*)\)", body, re.S)
    if m:  # MLIR-style anchoring; our passes run on whole modules
        body = m.group(1)
    passes: list[Pass] = []
    for item, _ in _split_top(body, ","):
        item = item.strip()
        m = re.fullmatch(r"([A-Za-z0-9_\-]+)\s*(?:\{(.*)\})?", item, re.S)
        if not m:
            raise PipelineError(f"cannot parse pipeline element {item!r}; expected "
                                f"name or name{{option=value ...}}")
        name, opts = m.group(1), m.group(2)
        cls = known.get(name)
        if cls is None:
            raise PipelineError(f"unknown pass '{name}'; known passes: {', '.join(sorted(known))}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for opt, _ in _split_top(opts or "", ", \t\n"):
            key, eq, raw = opt.partition("=")
            fname = key.strip().replace("-", "_")
            if fname not in fields:
                raise PipelineError(f"pass '{name}' has no option '{key.strip()}'; its options: "
                                    f"{describe_options(cls)}")
            kwargs[fname] = _convert(cls, fields[fname], raw if eq else "true")
        p = cls(**kwargs)
        p.validate()
        passes.append(p)
    return passes


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    s = str(v)
    return f'"{s}"' if re.search(r"[\s,{}\"]", s) else s


def print_pipeline(passes: list[Pass]) -> str:
    """The canonical text of a pipeline: parse_pipeline(print_pipeline(p)) == p."""
    out = []
    for p in passes:
        opts = [f"{_opt(f.name)}={_format_value(getattr(p, f.name))}" for f in dataclasses.fields(p)
                if getattr(p, f.name) != f.default]
        out.append(p.name + ("{" + " ".join(opts) + "}" if opts else ""))
    return ",".join(out)


# ------------------------------------------------------------------ analyses & context


class AnalysisManager:
    """Caches analyses by class. An analysis is constructed as `cls(module, ctx)`."""

    def __init__(self, ctx: "PassContext"):
        self.ctx = ctx
        self._cache: dict[type, Any] = {}

    def get(self, cls: type, module: Module) -> Any:
        if cls not in self._cache:
            self._cache[cls] = cls(module, self.ctx)
        return self._cache[cls]

    def invalidate(self, keep: tuple[type, ...] = ()) -> None:
        self._cache = {k: v for k, v in self._cache.items() if k in keep}


@dataclass
class PassContext:
    """What passes may read and change besides the IR: the weights, the calibration batches
    (statistics over them are an analysis), the target and the cost model to ask (both set
    by `compile()`), remarks, statistics and the per-layer report."""

    weights: WeightStore = field(default_factory=WeightStore)
    calibration: list | None = None
    target: Target = field(default_factory=Target.host)
    cost_model: Any = None  # a `compiler.cost.CostModel`; passes reach it through the analysis
    diagnostics: list[Diagnostic] = field(default_factory=list)
    stats: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    report: list[LayerEntry] = field(default_factory=list)
    # The calibration statistics the pipeline's passes declared (None: collect everything).
    statistics_needed: frozenset[str] | None = None
    # Whether float weights a compression pass replaces stay readable (`original_of`) until
    # the compile ends: only when a pass of the pipeline reads them (`reads_originals`),
    # since holding them doubles a compile's weight memory.
    keep_originals: bool = True
    # `progress(pass_name, done, total, what)`: told after each layer a long pass finishes
    # (the command line draws a progress bar with an ETA from it); None: nobody listens.
    progress: Callable[[str, int, int, str], None] | None = None
    analyses: AnalysisManager = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.analyses is None:
            self.analyses = AnalysisManager(self)

    def stat(self, pass_name: str, key: str, n: int = 1) -> None:
        self.stats[pass_name][key] += n

    def step(self, pass_name: str, done: int, total: int, what: str) -> None:
        """Report that `done` of the `total` layers of a long pass are finished."""
        if self.progress is not None:
            self.progress(pass_name, done, total, what)

    def remark(self, where: Op | Function | None, message: str) -> None:
        """Record what a pass did or chose not to do, at the op (or function) it is about
        (None: the module)."""
        self.diagnostics.append(Diagnostic("remark", message, where.loc if where is not None else None))


# ------------------------------------------------------------------ the pass manager


@dataclass
class PassManager:
    passes: list[Pass]
    verify: bool = True
    print_ir_after_all: bool = False
    timing: bool = False
    out: TextIO | None = None  # where IR dumps and reports go (default stderr)
    timings: list[tuple[str, float]] = field(default_factory=list)

    @staticmethod
    def parse(pipeline: str, registry: Registry[type[Pass]] | None = None, **kw) -> "PassManager":
        return PassManager(parse_pipeline(pipeline, registry), **kw)

    @property
    def pipeline(self) -> str:
        return print_pipeline(self.passes)

    def run(self, module: Module, ctx: PassContext) -> None:
        from .printer import print_module
        from .verifier import verify

        out = self.out or sys.stderr
        if self.verify:
            verify(module, ctx.weights, pass_name=None)
        needed = frozenset().union(*(p.statistics() for p in self.passes))
        ctx.statistics_needed = needed if ctx.statistics_needed is None else ctx.statistics_needed | needed
        ctx.keep_originals = any(p.reads_originals for p in self.passes)
        for p in self.passes:
            if p.needs_unfused:
                _refuse_after_fusion(p, module)
            t0 = time.perf_counter()
            try:
                changed = p.run(module, ctx)
            except (VerifyError, PipelineError):
                raise
            except SpokeshaveError as e:
                raise e.with_prefix(f"pass '{p.name}': ") from None
            self.timings.append((p.name, time.perf_counter() - t0))
            if changed is not False:
                ctx.analyses.invalidate(p.preserves)
            if self.verify:
                verify(module, ctx.weights, pass_name=p.name)
            if self.print_ir_after_all:
                out.write(f"// -----// IR Dump After {print_pipeline([p])} //----- //\n")
                out.write(print_module(module))
                out.write("\n")
        if self.timing:
            out.write(self.report(ctx))

    def report(self, ctx: PassContext) -> str:
        buf = io.StringIO()
        total = sum(t for _, t in self.timings) or 1e-12
        buf.write("===" + "-" * 70 + "===\n")
        buf.write("  Pass execution timing report\n")
        buf.write("===" + "-" * 70 + "===\n")
        buf.write(f"  Total: {total * 1e3:.3f} ms\n")
        for name, t in self.timings:
            buf.write(f"  {t * 1e3:10.3f} ms ({100 * t / total:5.1f}%)  {name}\n")
        if ctx.stats:
            buf.write("===" + "-" * 70 + "===\n  Pass statistics\n")
            for name, counter in ctx.stats.items():
                for k, v in sorted(counter.items()):
                    buf.write(f"  {name}: {v} {k}\n")
        return buf.getvalue()


def _refuse_after_fusion(p: Pass, module: Module) -> None:
    fused = next((op for op in module.walk() if op.regions), None)
    if fused is not None:
        raise PipelineError(f"pass '{p.name}' must run before 'fuse': the module already has fused "
                            f"groups ({fused.describe()}), whose ops it would not see; put the "
                            f"compression passes before 'fuse' in the pipeline", fused.loc)


def run_pipeline(module: Module, pipeline: str | list[Pass], ctx: PassContext | None = None,
                 **kw) -> PassContext:
    """Parse (if text) and run a pipeline; returns the context (weights, stats...)."""
    ctx = ctx or PassContext()
    passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    PassManager(passes, **kw).run(module, ctx)
    return ctx


