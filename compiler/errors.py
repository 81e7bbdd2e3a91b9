"""User-facing errors, diagnostics and source locations.

Every error a user can cause (bad IR text, bad options, an untraceable model, a broken
invariant after a pass) is a `SpokeshaveError`: one message that says where and how to fix
it. The CLIs print it as `error: ...` and exit 1; they never show a Python traceback. An
error that points at IR carries its `loc`, so `spokeshave-opt --verify-diagnostics` can
check it at its line, as `mlir-opt` does. Remarks (what a pass chose not to do) are
`Diagnostic`s collected in the pass context.
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


@dataclass(frozen=True)
class Diagnostic:
    """One message about the IR: `severity` is "error", "warning" or "remark"."""

    severity: str
    message: str
    loc: Location | None = None

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}{self.severity}: {self.message}"


class SpokeshaveError(Exception):
    """An error the user can act on; `str()` is the whole message. `loc`, when given, is the
    place in the IR the error is about (printed in front of the message)."""

    def __init__(self, message: str, loc: Location | None = None):
        self.message = message
        self.loc = loc
        super().__init__(f"{loc}: error: {message}" if loc is not None else message)

    def with_prefix(self, prefix: str) -> "SpokeshaveError":
        """The same error with `prefix` in front of its message (its place kept)."""
        err = SpokeshaveError.__new__(type(self))
        SpokeshaveError.__init__(err, prefix + self.message, self.loc)
        return err


class ParseError(SpokeshaveError):
    """Malformed IR text. Formats like MLIR: `FILE:LINE:COL: error: ...` + the line + caret."""

    def __init__(self, loc: Location, message: str, source_line: str | None = None):
        super().__init__(message, loc)
        if source_line is not None:
            caret = " " * max(loc.col - 1, 0) + "^"
            self.args = (f"{self.args[0]}\n{source_line}\n{caret}",)


class VerifyError(SpokeshaveError):
    """An IR invariant does not hold. Names the op, its location and (if any) the pass."""


class PipelineError(SpokeshaveError):
    """A pipeline string names an unknown pass or option, or an option value is out of range."""


class ExportError(SpokeshaveError):
    """`torch.export` could not trace the model, or it produced something we cannot import."""


class UnsupportedError(SpokeshaveError):
    """A construct the compiler cannot handle yet; says what it is and where."""


class InvalidInputError(SpokeshaveError):
    """A call's inputs are outside what an op defines (torch refuses them too, e.g. an amax
    over an empty dim): the caller's to fix, never a kernel failure to fall back from."""
