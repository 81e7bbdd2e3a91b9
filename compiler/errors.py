"""User-facing errors and source locations.

Every error a user can cause (bad IR text, bad options, an untraceable model, a broken
invariant after a pass) is a `SpokeshaveError`: one message that says where and how to fix
it. The CLIs print it as `error: ...` and exit 1; they never show a Python traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A position in a source: IR text (`model.mlir:3:7`) or Python (`modeling_bert.py:312`)."""

    file: str
    line: int
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SpokeshaveError(Exception):
    """An error the user can act on; `str()` is the whole message."""


class ParseError(SpokeshaveError):
    """Malformed IR text. Formats like MLIR: `FILE:LINE:COL: error: ...` + the line + caret."""

    def __init__(self, loc: Location, message: str, source_line: str | None = None):
        self.loc = loc
        self.message = message
        text = f"{loc}: error: {message}"
        if source_line is not None:
            caret = " " * max(loc.col - 1, 0) + "^"
            text += f"\n{source_line}\n{caret}"
        super().__init__(text)


class VerifyError(SpokeshaveError):
    """An IR invariant does not hold. Names the op, its location and (if any) the pass."""


class PipelineError(SpokeshaveError):
    """A pipeline string names an unknown pass or option, or an option value is out of range."""


class ExportError(SpokeshaveError):
    """`torch.export` could not trace the model, or it produced something we cannot import."""


class UnsupportedError(SpokeshaveError):
    """A construct the compiler cannot handle yet; says what it is and where."""
