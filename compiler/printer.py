"""Prints a `Module` in MLIR generic syntax (with `func.func`/`return` in their custom form).

The printer is the canonical form: `parse(print(m))` is structurally equal to `m`, and
`print(parse(t)) == t` for any `t` the printer produced. Results are numbered `%0, %1, ...`
in order; arguments keep their names where they are valid MLIR identifiers and unique.
"""
from __future__ import annotations

import math
import re
import struct

from .errors import Location
from .ir import UNIT, Attr, Function, Module, Op, TypeAttr, Value

# Used with fullmatch: `$` would also match before a trailing newline.
_BARE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_$.]*")
_SUFFIX_ID = re.compile(r"[A-Za-z_$.\-][A-Za-z0-9_$.\-]*")


def format_float(x: float) -> str:
    """A float literal MLIR accepts and that reads back to the same double."""
    if math.isfinite(x):
        s = repr(float(x))
        mant, _, exp = s.partition("e")
        if "." not in mant:
            mant += ".0"
        return mant + ("e" + exp if exp else "")
    bits = struct.unpack("<Q", struct.pack("<d", x))[0]
    return f"0x{bits:016X} : f64"


def format_string(s: str) -> str:
    out = []
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def format_attr(a: Attr) -> str:
    if isinstance(a, bool):
        return "true" if a else "false"
    if isinstance(a, int):
        return str(a)
    if isinstance(a, float):
        return format_float(a)
    if isinstance(a, str):
        return format_string(a)
    if isinstance(a, TypeAttr):
        return str(a)
    if isinstance(a, list):
        return "[" + ", ".join(format_attr(x) for x in a) + "]"
    if a is UNIT:
        return "unit"
    raise TypeError(f"cannot print attribute value {a!r}")


def format_attr_dict(attrs: dict[str, Attr]) -> str:
    parts = []
    for k, v in attrs.items():
        key = k if _BARE_ID.fullmatch(k) else format_string(k)
        parts.append(key if v is UNIT else f"{key} = {format_attr(v)}")
    return "{" + ", ".join(parts) + "}"


def format_loc(loc: Location) -> str:
    return f"loc({format_string(loc.file)}:{loc.line}:{loc.col})"


def _type_list(types) -> str:
    types = list(types)
    if len(types) == 1:
        return str(types[0])
    return "(" + ", ".join(str(t) for t in types) + ")"


class _Namer:
    """Assigns each value its printed name; one namespace per function, like MLIR."""

    def __init__(self):
        self.names: dict[Value, str] = {}
        self.taken: set[str] = set()
        self.next_result = 0
        self.next_arg = 0

    def name_arg(self, v: Value) -> str:
        hint = v.name_hint
        if hint is not None and not _SUFFIX_ID.fullmatch(hint):
            hint = re.sub(r"[^A-Za-z0-9_$.\-]", "_", hint)
            if not _SUFFIX_ID.fullmatch(hint):
                hint = "_" + hint
        while hint is None or hint in self.taken:
            hint = f"arg{self.next_arg}"
            self.next_arg += 1
        self.taken.add(hint)
        self.names[v] = "%" + hint
        return self.names[v]

    def name_results(self, op: Op) -> str:
        while str(self.next_result) in self.taken:
            self.next_result += 1
        base = str(self.next_result)
        self.taken.add(base)
        self.next_result += 1
        n = len(op.results)
        for i, r in enumerate(op.results):
            self.names[r] = f"%{base}" if n == 1 else f"%{base}#{i}"
        return f"%{base}" if n == 1 else f"%{base}:{n}"

    def ref(self, v: Value) -> str:
        try:
            return self.names[v]
        except KeyError:
            return "%<<UNKNOWN>>"  # only for broken IR; the verifier reports it


class Printer:
    def __init__(self, debug_info: bool = False):
        self.debug_info = debug_info
        self.lines: list[str] = []

    def print_function(self, f: Function) -> None:
        namer = _Namer()
        args = []
        for a, attrs in zip(f.args, f.arg_attrs):
            s = f"{namer.name_arg(a)}: {a.type}"
            if attrs:
                s += " " + format_attr_dict(attrs)
            args.append(s)
        res = ""
        if f.result_types:
            res = " -> " + _type_list(f.result_types)
        loc = f" {format_loc(f.loc)}" if self.debug_info and f.loc else ""
        one_line = f"func.func @{f.name}({', '.join(args)}){res} {{"
        if len(one_line) <= 120:
            self.lines.append(one_line)
        else:  # one argument per line: models have hundreds of parameters
            self.lines.append(f"func.func @{f.name}(")
            self.lines.extend(f"    {a}," for a in args[:-1])
            self.lines.append(f"    {args[-1]}){res} {{")
        for op in f.ops:
            self.print_op(op, namer, "  ")
        self.lines.append("}" + loc)

    def print_op(self, op: Op, namer: _Namer, indent: str) -> None:
        operands = ", ".join(namer.ref(v) for v in op.operands)
        if op.name == "func.return" and not op.regions and not op.attributes:
            types = ", ".join(str(v.type) for v in op.operands)
            text = f"return {operands} : {types}" if op.operands else "return"
            self.lines.append(indent + text + self._loc(op))
            return
        lhs = namer.name_results(op) + " = " if op.results else ""
        head = f'{indent}{lhs}"{op.name}"({operands})'
        closing = head
        if op.regions:
            self.lines.append(head + " ({")
            for ri, region in enumerate(op.regions):
                if ri:
                    self.lines.append(indent + "}, {")
                for block in region.blocks:
                    bargs = ", ".join(f"{namer.name_arg(a)}: {a.type}" for a in block.args)
                    self.lines.append(f"{indent}^bb0({bargs}):")
                    for inner in block.ops:
                        self.print_op(inner, namer, indent + "  ")
            closing = indent + "})"
        tail = ""
        if op.attributes:
            tail += " " + format_attr_dict(op.attributes)
        in_types = ", ".join(str(v.type) for v in op.operands)
        tail += f" : ({in_types}) -> {_type_list([r.type for r in op.results]) if op.results else '()'}"
        self.lines.append(closing + tail + self._loc(op))

    def _loc(self, op: Op) -> str:
        return f" {format_loc(op.loc)}" if self.debug_info and op.loc else ""


def print_module(module: Module, debug_info: bool = False) -> str:
    """The module as text. `debug_info=True` appends `loc(...)` to ops, like `--mlir-print-debuginfo`."""
    chunks = []
    for f in module.functions:
        p = Printer(debug_info)
        p.print_function(f)
        chunks.append("\n".join(p.lines) + "\n")
    return "\n".join(chunks)


def print_op(op: Op) -> str:
    """One op (and its regions) in generic form, numbering as if it stood alone."""
    namer = _Namer()
    for v in op.operands:
        if v not in namer.names:
            namer.names[v] = "%" + (v.name_hint or "?")
    p = Printer()
    p.print_op(op, namer, "")
    return "\n".join(p.lines)
