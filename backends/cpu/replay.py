"""The CPU backend's replay runtime: a call's generated kernels run again as one C++ loop.

A single-token decode step runs ~1,000 ops of a few microseconds each, and the interpreter's
Python per op (argument lists, shape checks, `torch.empty`, ctypes marshalling) cost about
twice the kernels' own time. Under a fixed input signature none of that changes between
calls: the same kernels run on the same shapes. So, as CUDA graphs do for launches, the
second call with a signature is recorded and later ones replay it.

Recording runs the program op by op under a dispatch mode that sees every ATen op, while
`invoke` (the one place generated functions are called from) logs each kernel call with its
argument arrays. Each op is then one of:

- `free`: no ATen compute, no kernel (views, `py.*` sizes, allocations): under the signature
  its results are the recorded ones, so a replay skips it;
- `kernel`: kernel calls and no ATen compute: a replay makes the same calls on the same
  buffers, batched with its neighbours into one `spk_replay` call;
- `python`: anything else (an extern ATen op, a group on the reference path, a step that
  copied or computed with torch): a replay runs it as the interpreter does, then copies its
  result into the recorded buffer that later kernels and views read.

Every recorded value stays allocated, so the addresses in the kernel calls stay valid; the
user's inputs are copied into buffers the recording owns, and outputs the replay computed
in those buffers are cloned, so no call's result is overwritten by the next. A signature
whose recorded values would hold more than `HELD_BYTES` runs interpreted: holding them is
what liveness-based freeing avoids, and a call that large spends its time in kernels.
"""
from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.interpreter import Interpreter, define_function
from spokeshave.compiler.ir import Value
from torch.utils._python_dispatch import TorchDispatchMode

# A kernel call logged while recording: (function address, meta array, pointer array).
Call = tuple[int, Any, Any]

# `log` is set only while this thread's recording runs one op: another thread's calls, say
# an interpreted call of the same model, must not land in it
_recording = threading.local()


def invoke(fn: Any, meta: Any, ptrs: Any) -> None:
    """Call the generated step function `fn(meta, ptrs)` (ctypes arrays), logging the call
    when a recording is running in this thread."""
    log = getattr(_recording, "log", None)
    if log is not None:
        log.append((ctypes.cast(fn, ctypes.c_void_p).value, meta, ptrs))
    fn(meta, ptrs)


# Recorded values are held for as long as the signature is cached; past this a call is
# large enough that its kernels, not the per-op Python, dominate its time.
HELD_BYTES = 64 << 20
SIGNATURES = 8          # replays kept per executable, least recently used dropped

_ALLOCATIONS = frozenset({"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"})


def _no_compute(func: Any) -> bool:
    """An ATen op that only allocates or returns an alias of its input."""
    schema = func._schema
    if func._opname in _ALLOCATIONS:
        return True
    if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
        return False
    return bool(schema.returns) and all(r.alias_info is not None for r in schema.returns)


class _NotReplayable(Exception):
    pass


class _Watch(TorchDispatchMode):
    """Notes whether any computing ATen op ran, and keeps what the others made: a group's
    steps pass buffers no interpreter value holds, and its recorded calls point into them."""

    def __init__(self) -> None:
        super().__init__()
        self.computed = False
        self.made: list[Any] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if _no_compute(func):
            self.made.append(out)
        else:
            self.computed = True
        return out


def _signature(inputs: Sequence[Any]) -> tuple | None:
    key = []
    for x in inputs:
        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu" or x.requires_grad:
                return None
            key.append((tuple(x.shape), x.stride(), x.dtype))
        elif isinstance(x, (int, float, bool)) or x is None:
            key.append((type(x), x))
        else:
            return None
    return tuple(key)


def _dense(x: torch.Tensor) -> bool:
    """Every element of `x` has its own address, and they fill a block (a permuted
    contiguous tensor)."""
    expected = 1
    for size, stride in sorted((d for d in zip(x.shape, x.stride()) if d[0] != 1),
                               key=lambda d: d[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _storage_bytes(values: Sequence[Any]) -> int:
    seen: dict[int, int] = {}
    for x in values:
        if isinstance(x, torch.Tensor):
            s = x.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


class Replayer:
    """Calls `interpreter`, replaying recorded calls per input signature through `loop`
    (the library's `spk_replay`)."""

    def __init__(self, interpreter: Interpreter, loop: Any):
        self.interpreter = interpreter
        self.loop = loop
        loop.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        loop.restype = None
        self.cache: OrderedDict[tuple, Callable[[list[Any]], list[Any]] | None] = OrderedDict()
        self.seen: OrderedDict[tuple, None] = OrderedDict()
        self.lock = threading.Lock()   # a replay's buffers serve one call at a time
        self.replayed = 0

    def __call__(self, *inputs: Any) -> list[Any]:
        key = _signature(inputs)
        if key is None or not self.lock.acquire(blocking=False):
            return self.interpreter(*inputs)
        try:
            if key in self.cache:
                self.cache.move_to_end(key)
                replay = self.cache[key]
                if replay is None:
                    return self.interpreter(*inputs)
                self.replayed += 1
                with torch.no_grad():
                    return replay(list(inputs))
            if key not in self.seen:   # a shape seen once is not worth holding buffers for
                self.seen[key] = None
                if len(self.seen) > 8 * SIGNATURES:
                    self.seen.popitem(last=False)
                return self.interpreter(*inputs)
            outs, replay = self._record(inputs)
            self.cache[key] = replay
            while len(self.cache) > SIGNATURES:
                self.cache.popitem(last=False)
            return outs
        finally:
            self.lock.release()

    def _record(self, inputs: Sequence[Any]) -> tuple[list[Any], Callable | None]:
        interp = self.interpreter
        program = interp.program
        if len(inputs) != interp.n_inputs:
            return interp(*inputs), None
        owned = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
        it = iter(owned)
        args = [interp.params[a] if a in interp.params else next(it) for a in interp.func.args]
        env: dict[Value, Any] = dict(zip(program.block.args, args))
        kinds: list[str] = []
        calls: list[list[Call]] = []
        buffers: list[torch.Tensor] = []
        watch = _Watch()
        with torch.no_grad(), watch:
            for i, (op, run) in enumerate(zip(program.body, program.runners)):
                watch.computed, watch.made = False, []
                _recording.log = logged = []
                try:
                    out = run([env[v] for v in op.operands], None)
                except SpokeshaveError:
                    raise
                except Exception as e:   # reported as the interpreter reports it
                    raise program._failure(i, e) from e
                finally:
                    _recording.log = None
                if len(op.results) == 1:
                    env[op.results[0]] = out
                else:
                    env.update(zip(op.results, out))
                kinds.append("python" if watch.computed else "kernel" if logged else "free")
                calls.append(logged)
                if logged and not watch.computed:
                    buffers.extend(t for t in watch.made if isinstance(t, torch.Tensor))
        recorded = [env[v] for v in program.outputs]
        outs = [x.clone() if isinstance(x, torch.Tensor) else x for x in recorded]
        held = [x for v, x in env.items() if v not in interp.params] + buffers
        if not any(calls) or _storage_bytes(held) > HELD_BYTES:
            return outs, None
        try:
            return outs, self._build(env, kinds, calls, buffers)
        except _NotReplayable:
            return outs, None

    def _build(self, env: dict[Value, Any], kinds: list[str], calls: list[list[Call]],
               buffers: list[torch.Tensor]) -> Callable[[list[Any]], list[Any]]:
        interp = self.interpreter
        program = interp.program
        live: dict[Value, str] = {}      # values a replay computes: python results, user inputs
        consts: list[Any] = []
        const_name: dict[Value, str] = {}

        def recorded(v: Value) -> str:
            if v not in const_name:
                const_name[v] = f"K[{len(consts)}]"
                consts.append(env[v])
            return const_name[v]

        def ref(v: Value) -> str:
            return live.get(v) or recorded(v)

        readers: dict[Value, set[str]] = {}
        last_python_use: dict[Value, int] = {}
        for i, (op, kind) in enumerate(zip(program.body, kinds)):
            for v in op.operands:
                readers.setdefault(v, set()).add(kind)
                if kind == "python":
                    last_python_use[v] = i
        outputs = set(program.outputs)
        for v in outputs:
            readers.setdefault(v, set()).add("output")

        def copy_if_read_recorded(v: Value, name: str) -> list[str]:
            x = env[v]
            if not readers.get(v, set()) - {"python", "output"}:
                return []
            if not isinstance(x, torch.Tensor):
                if v in interp.func.args:
                    return []            # a scalar input: its value is part of the signature
                raise _NotReplayable     # a computed scalar (`item()`) the skipped ops read
            if not _dense(x):
                raise _NotReplayable     # copying into it would write one element twice
            return [f"    {recorded(v)}.copy_({name})"]

        lines = ["def replay(inputs):"]
        users = [a for a in interp.func.args if a not in interp.params]
        for j, a in enumerate(users):
            live[a] = f"inputs[{j}]"
            lines += copy_if_read_recorded(a, live[a])
        segments: list[tuple[int, Any, Any, Any, list]] = []
        pending: list[Call] = []

        def flush() -> None:
            if not pending:
                return
            n = len(pending)
            fns = (ctypes.c_void_p * n)(*(c[0] for c in pending))
            metas = (ctypes.c_void_p * n)(*(ctypes.addressof(c[1]) if c[1] is not None else 0
                                            for c in pending))
            ptrs = (ctypes.c_void_p * n)(*(ctypes.addressof(c[2]) for c in pending))
            segments.append((n, fns, metas, ptrs, list(pending)))  # the list keeps the arrays alive
            lines.append(f"    LOOP(*S[{len(segments) - 1}][:4])")
            pending.clear()

        for i, (op, kind, logged) in enumerate(zip(program.body, kinds, calls)):
            if kind != "python":
                pending.extend(logged)
                continue
            flush()
            operands = ", ".join(ref(v) for v in op.operands)
            names = [f"v{i}_{k}" for k in range(len(op.results))]
            target = names[0] if len(names) == 1 else ", ".join(names) + ","
            lines.append(f"    i = {i}; {target} = R[{i}]([{operands}], None)" if names
                         else f"    i = {i}; R[{i}]([{operands}], None)")
            for r, name in zip(op.results, names):
                live[r] = name
                lines += copy_if_read_recorded(r, name)
            dead = [live[v] for v in dict.fromkeys(op.operands) if v in live
                    and live[v].startswith("v") and last_python_use.get(v) == i
                    and v not in outputs]
            if dead:
                lines.append(f"    del {', '.join(dead)}")
        flush()
        outs = []
        for v in program.outputs:
            if v in live:
                outs.append(live[v])
            elif isinstance(env[v], torch.Tensor):
                outs.append(f"{recorded(v)}.clone()")
            else:
                outs.append(recorded(v))
        lines.append(f"    return [{', '.join(outs)}]")
        # the same failure reports as the interpreter's, for the python ops a replay runs
        lines = [lines[0], "    i = -1", "    try:", *("    " + s for s in lines[1:]),
                 "    except SPK:", "        raise", "    except Exception as e:",
                 "        raise FAIL(i, e) from e"]
        scope = {"R": program.runners, "K": consts, "S": segments, "LOOP": self.loop, "B": buffers,
                 "FAIL": program._failure, "SPK": SpokeshaveError}
        return define_function(lines, len(live) + 1, scope,
                               f"<spokeshave replay of {len(program.body)} ops>", True)
