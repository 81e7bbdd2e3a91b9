"""`spokeshave-opt --verify-diagnostics`: check diagnostics where they point, as `mlir-opt` does.

A test file says which diagnostics it expects with comments:

    // expected-error@+1 {{in-features 8 != weight's in-features 9}}
    %0 = "aten.linear"(%x, %w) : ...
    %1 = "spk.fused"(...) ...   // expected-remark {{kept in float}}

`@+N` / `@-N` point N lines below / above the comment, `@above` / `@below` one line, and no
designator the comment's own line; a trailing `:COL` (`@+1:12`) also pins the column. The
text between `{{` and `}}` must occur in the message. Every expected diagnostic must be
produced, at its line, and every produced diagnostic (error, warning or remark) must be
expected; each miss is reported at its own place.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .compiler.errors import Diagnostic, Location

_EXPECTED = re.compile(r"//\s*expected-(error|warning|remark)"
                       r"(?:@(above|below|[+-]\d+))?(?::(\d+))?\s*\{\{(.*?)\}\}")


@dataclass
class Expected:
    """One `expected-...` annotation: what, where it points, and where it is written."""

    severity: str
    line: int
    col: int | None
    text: str
    written_at: Location

    def matches(self, d: Diagnostic) -> bool:
        return (d.severity == self.severity and d.loc is not None and d.loc.line == self.line
                and (self.col is None or d.loc.col == self.col) and self.text in d.message)


def expected_in(text: str, filename: str, line_offset: int = 0) -> list[Expected]:
    """The annotations of one input chunk (its first line is file line `line_offset + 1`)."""
    found = []
    for i, line in enumerate(text.split("\n")):
        here = line_offset + i + 1
        for m in _EXPECTED.finditer(line):
            severity, where, col, message = m.groups()
            if where is None:
                target = here
            elif where == "above":
                target = here - 1
            elif where == "below":
                target = here + 1
            else:
                target = here + int(where)
            found.append(Expected(severity, target, None if col is None else int(col), message,
                                  Location(filename, here, m.start() + 1)))
    return found


def check(expected: list[Expected], produced: list[Diagnostic], filename: str) -> list[str]:
    """The failures, as `FILE:LINE:COL: error: ...` lines (empty when everything matched)."""
    left = list(produced)
    failures = []
    for e in expected:
        hit = next((d for d in left if e.matches(d)), None)
        if hit is None:
            where = f":{e.col}" if e.col is not None else ""
            failures.append(f"{e.written_at}: error: expected {e.severity} \"{e.text}\" at line "
                            f"{e.line}{where} was not produced")
        else:
            left.remove(hit)
    for d in left:
        where = d.loc if d.loc is not None else filename
        failures.append(f"{where}: error: unexpected {d.severity}: {d.message}")
    return failures
