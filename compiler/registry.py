"""A named registry: passes, backends and op definitions each live in one.

Registries are filled explicitly (`spokeshave.load_builtin()` registers what ships with
the package), never as a side effect of importing a module. `scoped()` lets a test add
its own entries (a toy compressed format, a probe pass) and takes them away again, so
nothing a test declares leaks into the process-wide registry.
"""
from __future__ import annotations

import contextlib
from typing import Generic, Iterator, TypeVar

from .errors import SpokeshaveError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> item. `what` names the kind of item in error messages ("pass", "backend")."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add `item` under `name`; registering the same item again is a no-op, another item
        under a taken name is a programming error."""
        old = self._items.get(name)
        if old is not None and old is not item:
            raise TypeError(f"{self.what} '{name}' is registered twice ({old!r} and {item!r})")
        self._items[name] = item
        return item

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            plural = self.what + ("es" if self.what.endswith("s") else "s")
            raise SpokeshaveError(f"unknown {self.what} '{name}'; known {plural}: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    @contextlib.contextmanager
    def scoped(self) -> Iterator["Registry[T]"]:
        """Entries registered inside the `with` block are gone after it."""
        saved = dict(self._items)
        try:
            yield self
        finally:
            self._items = saved
