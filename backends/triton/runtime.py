"""Running a module on the Triton backend: its compressed linears as generated Triton GEMMs
(`gemm.py`), every other op through the interpreter's ATen path (torch, on the same device).

The kernels of a module are written to one Python file in the Triton kernel cache
(`$SPOKESHAVE_TRITON_CACHE`, else `~/.cache/spokeshave/triton`), named by the sha256 of its
text and imported from there: `@triton.jit` reads its function's source back from the file,
so generated source cannot be `exec`'d from a string. Triton compiles (and caches) each
block-size variant on its first launch. A kernel that fails to compile or launch is
reported once, with the op and the error, and that op runs on the reference path from then
on: never a wrong result, never a crash.

Under `TRITON_INTERPRET=1` (no GPU: CI and these machines) Triton runs the same kernels on
CPU tensors with numpy, exactly; that is how every kernel here is tested.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import torch

from spokeshave.compiler.backend import KernelInfo
from spokeshave.compiler.dialect import BIAS, OPS, WEIGHT
from spokeshave.compiler.errors import SpokeshaveError
from spokeshave.compiler.interpreter import Interpreter, reference_runner
from spokeshave.compiler.ir import Module, Op
from spokeshave.compiler.numerics.quant import quantize_per_token_int8
from spokeshave.compiler.printer import print_module
from spokeshave.compiler.target import Target
from spokeshave.compiler.weights import WeightStore

from .gemm import FORMATS, HEADER, kernel_name, kernel_source

CACHE_ENV = "SPOKESHAVE_TRITON_CACHE"
INTERPRETER_ARCH = "interpreter"


class TritonBackendWarning(UserWarning):
    """A Triton kernel could not run, so its op runs on the reference path."""


def interpreting() -> bool:
    """Whether Triton runs kernels with its interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def default_target() -> Target:
    """This machine's GPU, or the Triton interpreter on the CPU under `TRITON_INTERPRET=1`;
    without either, one error naming the backends that do fit this machine."""
    if torch.cuda.is_available():
        return Target.cuda()
    if interpreting():
        return Target(device="cuda", arch=INTERPRETER_ARCH,
                      name="Triton interpreter on the CPU (TRITON_INTERPRET=1)")
    from spokeshave.compiler.backend import BACKENDS

    host = Target.host()
    fits = [b.name for b in BACKENDS.values() if b.misfit(host) is None]
    raise SpokeshaveError(f"backend 'triton' needs an NVIDIA GPU and none is visible; set "
                          f"TRITON_INTERPRET=1 to run its kernels on the CPU (exact, slow), or use "
                          f"a backend that fits this machine: {', '.join(fits)}")


def module_source(ops: Sequence[str]) -> str:
    """The kernel file for a module whose compressed linears are `ops`."""
    return HEADER + "".join(kernel_source(op) for op in sorted(set(ops)))


def _cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "spokeshave", "triton")


def load_kernels(source: str) -> Any:
    """Import `source` from the kernel cache (written atomically on a miss)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    path = os.path.join(_cache_dir(), f"spk_{digest}.py")
    if not os.path.isfile(path):
        os.makedirs(_cache_dir(), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".spk-", suffix=".py", dir=_cache_dir())
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"spokeshave_triton_{digest}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _blocks(m: int) -> tuple[int, int, int]:
    """(BM, BN, BK): 16-row tiles for decode-sized M (tl.dot needs >= 16 on each side)."""
    return (16 if m <= 16 else 32), 32, 32


class GemmCall:
    """One compressed linear run by its generated kernel."""

    def __init__(self, op: Op, kernel: Callable):
        self.op, self.kernel = op, kernel
        ops = OPS[op.name].bind(op)
        self.weights = ops.positions_of(WEIGHT)
        self.bias = ops.positions_of(BIAS)
        self.attrs = op.attributes

    def __call__(self, args: list[Any]) -> torch.Tensor:
        x = args[0]
        w = [args[i] for i in self.weights]
        bias = args[self.bias[0]] if self.bias else None
        n = w[0].shape[0]
        k = x.shape[-1]
        x2 = x.reshape(-1, k).float().contiguous()
        m = x2.shape[0]
        y = torch.empty((m, n), dtype=torch.float32, device=x.device)
        extra: dict[str, Any] = {}
        name = self.op.name
        if name == "spk.linear_w8a8":
            xq, xs = quantize_per_token_int8(x2)
            x2, w = xq, [w[0], w[1], xs.reshape(-1).contiguous()]
        elif name == "spk.linear_fp8":
            w = [w[0].view(torch.uint8), w[1]]
        elif name == "spk.linear_w4g":
            sym = self.attrs["symmetric"]
            w = [w[0], w[1], w[1] if sym else w[2]]  # a symmetric weight passes no zeros
            extra = {"GROUP": self.attrs["group"], "HAS_ZEROS": not sym}
        elif name == "spk.linear_sparse24":
            extra = {"MCOLS": w[1].shape[1]}
        if m and n:
            bm, bn, bk = _blocks(m)
            grid = ((m + bm - 1) // bm, (n + bn - 1) // bn)
            self.kernel[grid](x2, *w, bias if bias is not None else y, y, m, n, k,
                              x2.stride(0), y.stride(0), HAS_BIAS=bias is not None, **extra,
                              BM=bm, BN=bn, BK=bk)
        return y.reshape(*x.shape[:-1], n).to(x.dtype)


class TritonExecutable:
    """An `Executable`: the interpreter with the compressed linears swapped for kernels."""

    def __init__(self, module: Module, weights: WeightStore, target: Target):
        self.module, self.target = module, target
        self.device = torch.device("cpu" if target.arch == INTERPRETER_ARCH else "cuda")
        if self.device.type != "cpu":
            weights = WeightStore({n: t.to(self.device) for n, t in weights.items()})
        self.ops = [op for op in module.entry.body.ops[:-1] if op.name in FORMATS]
        self._source = module_source([op.name for op in self.ops]) if self.ops else ""
        self.failed: dict[Op, str] = {}
        kernels = load_kernels(self._source) if self.ops else None
        self.calls = {op: GemmCall(op, getattr(kernels, kernel_name(op.name)))
                      for op in self.ops}
        self.extern_ops = Counter(op.name for op in module.entry.body.ops[:-1]
                                  if op not in self.calls)
        self._interpreter = Interpreter(module, weights, select=self._select)

    def _select(self, op: Op):
        call = self.calls.get(op)
        if call is None:
            return None
        fallback = reference_runner(op)

        def run(args: list[Any]) -> Any:
            if op in self.failed:
                return fallback(args)
            try:
                return call(args)
            except Exception as e:  # noqa: BLE001 - a compile/launch failure: the op falls back
                where = f" at {op.loc}" if op.loc else ""
                self.failed[op] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                warnings.warn(f"spokeshave triton: the kernel of {op.name}{where} failed "
                              f"({self.failed[op]}); it runs on the reference path",
                              TritonBackendWarning, stacklevel=2)
                return fallback(args)
        return run

    def __call__(self, *inputs: Any) -> list[Any]:
        return self._interpreter(*inputs)

    @property
    def sources(self) -> Mapping[str, str]:
        out = {"module.mlir": print_module(self.module)}
        if self._source:
            out["kernels.py"] = self._source
        return out

    @property
    def kernels(self) -> Sequence[KernelInfo]:
        used = sorted({op.name for op in self.ops})
        return ([KernelInfo(kernel_name(n), (n,), "kernels.py") for n in used]
                + [KernelInfo(f"extern {n}", (n,)) for n in sorted(self.extern_ops)])


def build(module: Module, weights: WeightStore, target: Target) -> TritonExecutable:
    return TritonExecutable(module, weights, target)


def generate(module: Module, weights: WeightStore, target: Target) -> dict[str, str]:
    """What `build` would load: the kernel file (`spokeshave-opt --emit=triton`)."""
    ops = [op.name for op in module.entry.body.ops[:-1] if op.name in FORMATS]
    return {"kernels.py": module_source(ops)} if ops else {}
