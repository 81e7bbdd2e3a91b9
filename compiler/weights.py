"""The weight store: parameter name -> tensor, kept beside the IR like MLIR external resources.

Passes that change weights put new tensors in (never mutate a stored tensor in place: the
store may share memory with the user's model). The store saves to and loads from
safetensors; nothing is ever pickled.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

import torch

from .errors import SpokeshaveError
from .ir import Module, TensorType, torch_dtype


class WeightStore:
    """A mapping from parameter names (`spk.param`) to tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None):
        self._tensors: dict[str, torch.Tensor] = dict(tensors or {})
        # Float weights a compression pass replaced, by the name of the first tensor that
        # replaced them: later passes of the same compile (LoRC) need the original to measure
        # the compression error. Not part of the model: never saved, iterated or counted.
        self._originals: dict[str, tuple[str, torch.Tensor]] = {}  # successor -> (name, tensor)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise SpokeshaveError(f"the weight store has no tensor named '{name}'") from None

    def __setitem__(self, name: str, t: torch.Tensor) -> None:
        self._tensors[name] = t

    def __delitem__(self, name: str) -> None:
        del self._tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def items(self):
        return self._tensors.items()

    def retire(self, name: str, successor: str) -> None:
        """Remove `name` from the model, keeping its tensor readable as `original_of(successor)`
        until `forget_originals()` (the end of the compile)."""
        self._originals[successor] = (name, self._tensors.pop(name))

    def original_of(self, successor: str) -> tuple[str, torch.Tensor] | None:
        """(name, tensor) of the float tensor that `successor` replaced in this compile, if any."""
        return self._originals.get(successor)

    def forget_originals(self) -> None:
        self._originals.clear()

    def fresh_name(self, base: str) -> str:
        """A name not yet in the store: `base`, else `base.1`, `base.2`..."""
        if base not in self._tensors:
            return base
        i = 1
        while f"{base}.{i}" in self._tensors:
            i += 1
        return f"{base}.{i}"

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        # safetensors refuses tensors that share memory (a tied embedding and LM head, views
        # of one buffer): each shared buffer is written once per name, as its own copy.
        out, seen = {}, set()
        for k, v in self._tensors.items():
            v = v.contiguous()
            ptr = v.untyped_storage().data_ptr()
            out[k] = v.clone() if ptr in seen else v
            seen.add(ptr)
        save_file(out, path)

    @staticmethod
    def load(path: str) -> "WeightStore":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return WeightStore(load_file(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SpokeshaveError(f"{path}: error: cannot read weights ({e}); expected a "
                                  f"safetensors file mapping spk.param names to tensors") from None


# safetensors dtype names (the format's header) -> torch dtypes
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
              "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def is_placeholder(t: torch.Tensor) -> bool:
    """A tensor backed by one element (every stride 0): a streaming skeleton's stand-in for a
    weight that is still on disk."""
    return t.numel() > 1 and all(s == 0 for s in t.stride())


def safetensors_header(path: str) -> tuple[dict, int]:
    """A safetensors file's header (name -> dtype, shape, data_offsets; no `__metadata__`)
    and the byte offset its data starts at."""
    import struct

    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SpokeshaveError(f"{path}: not a safetensors file (shorter than its header size)")
        (n,) = struct.unpack("<Q", raw)
        if n > os.path.getsize(path) - 8:
            raise SpokeshaveError(f"{path}: not a safetensors file (its header size is {n} bytes, "
                                  f"past the end of the file)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SpokeshaveError(f"{path}: corrupted safetensors header ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def read_safetensors(path: str, names: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """`names` (name -> the dtype wanted) read from `path` with plain file reads into fresh
    tensors: no memory map, so no page of the file stays in the process once read."""
    header, start = safetensors_header(path)
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb", buffering=0) as f:
        for name, want in names.items():
            e = header[name]
            dtype = _ST_DTYPES.get(e["dtype"])
            if dtype is None:
                raise SpokeshaveError(f"{path}: tensor '{name}' has dtype {e['dtype']}, which "
                                      f"spokeshave does not read")
            t = torch.empty(e["shape"], dtype=dtype)
            b, end = e["data_offsets"]
            if end - b != t.numel() * t.element_size():
                raise SpokeshaveError(f"{path}: tensor '{name}' holds {end - b} bytes, but "
                                      f"{e['dtype']} {e['shape']} needs {t.numel() * t.element_size()}")
            f.seek(start + b)
            view = memoryview(t.view(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise SpokeshaveError(f"{path}: truncated: tensor '{name}' ends past the file")
                got += n
            out[name] = t if dtype == want else t.to(want)
    return out


def merge_safetensors(shards: list[str], out: str, keep: set[str] | None = None) -> None:
    """Write the tensors of `shards` (safetensors files; `keep`: only these names, first
    occurrence wins) into one safetensors file by copying their bytes: no tensor is loaded,
    so memory stays at one copy buffer however large the shards are."""
    import struct

    entries: list[tuple[str, str, dict, int]] = []  # (name, shard, header entry, data start)
    seen: set[str] = set()
    for shard in shards:
        header, start = safetensors_header(shard)
        for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if name not in seen and (keep is None or name in keep):
                seen.add(name)
                entries.append((name, shard, e, start))
    layout, offset = {}, 0
    for name, _, e, _ in entries:
        size = e["data_offsets"][1] - e["data_offsets"][0]
        layout[name] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(layout, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, shard, e, start in entries:
            with open(shard, "rb") as src:
                src.seek(start + e["data_offsets"][0])
                left = e["data_offsets"][1] - e["data_offsets"][0]
                while left:
                    chunk = src.read(min(left, 1 << 24))
                    f.write(chunk)
                    left -= len(chunk)


def sha256_file(path: str) -> str:
    """The sha256 of a file, read in 1 MiB chunks: what artifact manifests and the kernel
    cache check files against."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def synthetic_tensor(name: str, type: TensorType) -> torch.Tensor:
    """Deterministic stand-in data for a parameter (seeded by its name), so structural passes
    can be run on IR text that comes without weights."""
    if not type.is_static:
        raise SpokeshaveError(f"parameter '{name}' has dynamic shape {type}; parameters must be static")
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") % (2**63)
    g = torch.Generator().manual_seed(seed)
    dtype = torch_dtype(type.dtype)
    shape = tuple(type.shape)
    if dtype.is_floating_point:
        fan_in = shape[-1] if shape else 1
        return (torch.randn(shape, generator=g) / max(fan_in, 1) ** 0.5).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    return torch.randint(-8, 8, shape, generator=g).to(dtype)


def complete_weights(module: Module, weights: WeightStore | None) -> WeightStore:
    """Fill in synthetic data for every parameter `weights` does not have."""
    store = weights if weights is not None else WeightStore()
    for f in module.functions:
        for name, arg in f.params().items():
            if name not in store:
                try:
                    store[name] = synthetic_tensor(name, arg.type)
                except SpokeshaveError as e:
                    raise SpokeshaveError(e.message, f.loc) from None
    return store
