"""The weight store: parameter name -> tensor, kept beside the IR like MLIR external resources.

Passes that change weights put new tensors in (never mutate a stored tensor in place: the
store may share memory with the user's model). The store saves to and loads from
safetensors; nothing is ever pickled.
"""
from __future__ import annotations

import hashlib
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
