"""A hand-written recursive-descent parser for the IR text form (MLIR generic syntax).

It accepts what the printer writes, plus what people write by hand in tests: an optional
`module { ... }` wrapper, comments, `loc(...)` trailers, named results and typed integer
attributes (`3 : i64`). Every error is a `ParseError` at `FILE:LINE:COL` with the offending
line and a caret, as `mlir-opt` reports it; no input, however broken, raises anything else
(tests/fuzz checks this). That means limits a hand-written parser otherwise lacks: nesting
depth (Python's stack), the range of integers (i64, so the text means what MLIR reads) and
finite floats. `decode_source` turns a file's bytes into text with the same kind of error;
`read_source` reads a file (or stdin) through it.
"""
from __future__ import annotations

import math
import re
import struct
import sys

from .errors import Location, ParseError, SpokeshaveError
from .ir import (ELEMENT_TYPES, NONE, UNIT, Attr, Block, Function, Module, Op, Region, ScalarType,
                 TensorType, Type, TypeAttr, Value)

# re.ASCII: MLIR's lexer knows ASCII digits and spaces only; without it `\d` takes "٣" and `\s`
# takes U+00A0, which the printer would then silently normalise away.
_WS = re.compile(r"(?:\s+|//[^\n]*)+", re.ASCII)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$.]*")
_SUFFIX = re.compile(r"[A-Za-z0-9_$.\-]+")
_UINT = re.compile(r"\d+", re.ASCII)
_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?", re.ASCII)
_HEX = re.compile(r"0x[0-9A-Fa-f]+")
_TENSOR = re.compile(r"tensor<((?:(?:\d+|\?)x)*)([A-Za-z][A-Za-z0-9]*(?:<[A-Za-z0-9]+>)?)>",
                     re.ASCII)
_SCALAR_TYPES = re.compile(r"(i1|i8|i16|i32|i64|ui8|f16|bf16|f32|f64|index|none)\b", re.ASCII)
_KEYWORD = {k: re.compile(k + r"\b", re.ASCII) for k in ("true", "false", "unit")}
# What the printer writes between the quotes unescaped: an op name outside this set could not
# be printed back (a quote, a newline) or would not be an MLIR operation name.
_OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$.\-]*\Z")
_PARENS = re.compile(r"[()]")

MAX_NESTING = 100  # lists in lists, regions in regions: far beyond real IR, well within the stack
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
# What `N : type` may hold. MLIR's integers are signless (either range); i1 takes 0 and 1 only,
# since the attribute becomes a bool.
_INT_RANGES = {"i1": (0, 1), "i8": (-(1 << 7), (1 << 8) - 1), "i16": (-(1 << 15), (1 << 16) - 1),
               "i32": (-(1 << 31), (1 << 32) - 1), "i64": (I64_MIN, I64_MAX),
               "index": (I64_MIN, I64_MAX), "ui8": (0, (1 << 8) - 1)}
_UTF8_BOM = b"\xef\xbb\xbf"


def decode_source(data: bytes, filename: str) -> str:
    """A source file's bytes as text: UTF-8, a leading byte-order mark dropped. Anything else
    (a binary, a UTF-16 or Latin-1 file) is a `ParseError` at the first offending byte."""
    skip = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        bad = skip + e.start
        loc = _text_end_location(data[skip:bad].decode("utf-8"), filename)
        raise ParseError(loc, f"not UTF-8 text: invalid byte 0x{data[bad]:02x} at byte offset "
                              f"{bad}; spokeshave-opt reads MLIR text files") from None
    nul = text.find("\0")
    if nul >= 0:  # valid UTF-8, but no text file has one: say so rather than "expected a type"
        offset = skip + len(text[:nul].encode("utf-8"))
        raise ParseError(_text_end_location(text[:nul], filename),
                         f"binary file: NUL byte at byte offset {offset}; spokeshave-opt reads "
                         f"MLIR text files")
    return text


def read_source(path: str) -> tuple[str, str]:
    """(text, filename) of an IR file, `-` meaning stdin: read as bytes and `decode_source`d,
    so an unreadable or binary input is one `SpokeshaveError`, not an OSError or
    UnicodeDecodeError traceback."""
    if path == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        # A replaced sys.stdin (io.StringIO in tests, an embedding app) has text, no bytes: its
        # text goes through the same checks (surrogatepass: a lone surrogate is then a bad byte).
        data = (stdin.read() if stdin is not None
                else sys.stdin.read().encode("utf-8", "surrogatepass"))
        return decode_source(data, "<stdin>"), "<stdin>"
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise SpokeshaveError(f"{path}: error: cannot read input: {e.strerror}") from None
    return decode_source(data, path), path


def _shorten(literal: str) -> str:
    """A literal as an error message quotes it: a 5000-digit number would bury the message."""
    return literal if len(literal) <= 40 else f"{literal[:20]}...{literal[-8:]}"


def _text_end_location(prefix: str, filename: str) -> Location:
    """Where the character after `prefix` sits."""
    return Location(filename, prefix.count("\n") + 1, len(prefix) - (prefix.rfind("\n") + 1) + 1)


class Parser:
    def __init__(self, text: str, filename: str = "<string>", line_offset: int = 0):
        self.text = text
        self.filename = filename
        self.line_offset = line_offset
        self.pos = 0
        self.depth = 0  # open lists and regions, against MAX_NESTING
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    # ------------------------------------------------------------------ positions & errors

    def location(self, pos: int | None = None) -> Location:
        pos = self.pos if pos is None else pos
        lo, hi = 0, len(self._line_starts) - 1
        while lo < hi:  # last line start <= pos
            mid = (lo + hi + 1) // 2
            if self._line_starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return Location(self.filename, lo + 1 + self.line_offset, pos - self._line_starts[lo] + 1)

    def error(self, message: str, pos: int | None = None) -> ParseError:
        pos = self.pos if pos is None else pos
        loc = self.location(pos)
        start = self._line_starts[loc.line - 1 - self.line_offset]
        end = self.text.find("\n", start)
        line = self.text[start:] if end < 0 else self.text[start:end]
        return ParseError(loc, message, line)

    def skip_ws(self) -> None:
        m = _WS.match(self.text, self.pos)
        if m:
            self.pos = m.end()

    def peek(self, s: str) -> bool:
        self.skip_ws()
        return self.text.startswith(s, self.pos)

    def accept(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str, what: str | None = None) -> None:
        if not self.accept(s):
            raise self.error(f"expected {what or repr(s)}, found {self.found()}")

    def found(self) -> str:
        self.skip_ws()
        if self.pos >= len(self.text):
            return "end of input"
        m = re.compile(r"\S+").match(self.text, self.pos)
        tok = m.group(0)[:20] if m else self.text[self.pos]
        return repr(tok)

    def match(self, regex: re.Pattern) -> re.Match | None:
        self.skip_ws()
        m = regex.match(self.text, self.pos)
        if m:
            self.pos = m.end()
        return m

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def enter(self, pos: int) -> None:
        """Open one level of nesting; `leave()` closes it. Deeper than MAX_NESTING is an error
        here rather than a RecursionError (or a printer that overflows the stack) later."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nesting too deep: more than {MAX_NESTING} levels of lists or "
                             f"regions", pos)

    def leave(self) -> None:
        self.depth -= 1

    def bounded_int(self, digits: str, lo: int, hi: int, what: str, pos: int) -> int:
        """`int(digits)` if it lies in [lo, hi], else a located error naming `what`."""
        # int() refuses over 4300 digits (leading zeros count) with a ValueError, so it sees
        # the significant digits only; nothing in range has many.
        significant = digits.lstrip("+-").lstrip("0") or "0"
        if len(significant) <= 40:
            value = -int(significant) if digits.startswith("-") else int(significant)
            if lo <= value <= hi:
                return value
        raise self.error(f"{what} {_shorten(digits)} is out of range [{lo}, {hi}]", pos)

    # ------------------------------------------------------------------ top level

    def parse_module(self) -> Module:
        try:
            return self._parse_module()
        except RecursionError:  # MAX_NESTING keeps us far from it, unless the caller is deep
            raise self.error("nesting too deep for the Python stack") from None

    def _parse_module(self) -> Module:
        module = Module()
        self._function_names: set[str] = set()
        while not self.at_end():
            if self.accept("module"):
                if self.peek("attributes"):
                    self.expect("attributes")
                    self.parse_attr_dict()
                self.expect("{")
                while not self.accept("}"):
                    if self.at_end():
                        raise self.error("expected '}' to close the module")
                    self._add_function(module)
                self.parse_optional_loc()
            else:
                self._add_function(module)
        return module

    def _add_function(self, module: Module) -> None:
        self.skip_ws()
        start = self.pos
        f = self.parse_function()
        if f.name in self._function_names:
            raise self.error(f"redefinition of function @{f.name}", start)
        self._function_names.add(f.name)
        module.functions.append(f)

    def parse_function(self) -> Function:
        start = self.pos
        self.skip_ws()
        if not (self.accept("func.func") or self.accept("func")):
            raise self.error(f"expected 'func.func', found {self.found()}")
        self.expect("@", "'@' and a function name")
        m = self.match(_SUFFIX)
        if not m:
            raise self.error("expected a function name after '@'")
        name = m.group(0)
        self.scope: dict[str, Value] = {}
        self.expect("(")
        arg_types, arg_names, arg_attrs, arg_pos = [], [], [], []
        if not self.accept(")"):
            while True:
                self.skip_ws()
                arg_pos.append(self.pos)
                arg_names.append(self.parse_value_name())
                self.expect(":")
                arg_types.append(self.parse_type())
                arg_attrs.append(self.parse_attr_dict() if self.peek("{") else {})
                if self.accept(")"):
                    break
                self.expect(",", "',' or ')'")
        result_types: list[Type] = []
        if self.accept("->"):
            result_types = self.parse_type_list_maybe_paren()
        if self.accept("attributes"):
            self.parse_attr_dict()  # function-level attributes are not modelled; accepted and dropped
        f = Function(name, arg_types, arg_names, arg_attrs, result_types)
        f.loc = self.location(start)
        for n, a, p in zip(arg_names, f.args, arg_pos):
            self.define(n, a, p)
        self.expect("{", "'{' to open the function body")
        self.parse_ops_until_close(f.body)
        loc = self.parse_optional_loc()
        if loc:
            f.loc = loc
        if not f.body.ops or f.body.ops[-1].name != "func.return":
            raise self.error(f"function @{name} does not end with 'return'", start)
        ret = f.body.ops[-1]
        got = [v.type for v in ret.operands]
        if got != result_types:
            raise self.error(f"@{name} returns ({', '.join(map(str, got))}) but its signature says "
                             f"({', '.join(map(str, result_types))})", start)
        return f

    def parse_ops_until_close(self, block: Block) -> None:
        while not self.accept("}"):
            if self.at_end():
                raise self.error("expected '}' to close the block")
            block.append(self.parse_op())

    # ------------------------------------------------------------------ ops

    def define(self, name: str, value: Value, pos: int) -> None:
        base, hash_, _ = name.partition("#")
        # `%0:2` defines `0#0` and `0#1`; a later plain `%0` (or the reverse) is the same name
        if name in self.scope or (base in self.scope if hash_ else f"{name}#0" in self.scope):
            raise self.error(f"redefinition of SSA value '%{base}'", pos)
        self.scope[name] = value
        if value.is_block_arg:
            value.name_hint = name

    def parse_value_name(self) -> str:
        self.skip_ws()
        if not self.accept("%"):
            raise self.error(f"expected an SSA value name like '%0', found {self.found()}")
        m = _SUFFIX.match(self.text, self.pos)
        if not m:
            raise self.error("expected an SSA value name after '%'")
        self.pos = m.end()
        return m.group(0)

    def parse_value_ref(self) -> Value:
        self.skip_ws()
        pos = self.pos
        name = self.parse_value_name()
        index = 0
        if self.text.startswith("#", self.pos):
            self.pos += 1
            m = _UINT.match(self.text, self.pos)
            if not m:
                raise self.error("expected a result number after '#'")
            self.pos = m.end()
            index = self.bounded_int(m.group(0), 0, I64_MAX, "result number", m.start())
            key = f"{name}#{index}"
        else:
            key = name
        v = self.scope.get(key)
        if v is None:
            if key != name and (name in self.scope or f"{name}#0" in self.scope):
                raise self.error(f"'%{name}' has no result #{index}", pos)
            raise self.error(f"use of undefined value '%{key}'", pos)
        return v

    def parse_op(self) -> Op:
        self.skip_ws()
        start = self.pos
        result_names: list[tuple[str, int, int]] = []  # (name, count, pos)
        if self.peek("%"):
            while True:
                self.skip_ws()
                p = self.pos
                n = self.parse_value_name()
                count = 1
                if self.text.startswith(":", self.pos) and not self.text.startswith(": ", self.pos):
                    self.pos += 1
                    m = _UINT.match(self.text, self.pos)
                    if not m:
                        raise self.error("expected a result count after ':'")
                    self.pos = m.end()
                    count = self.bounded_int(m.group(0), 1, I64_MAX, "result count", m.start())
                result_names.append((n, count, p))
                if not self.accept(","):
                    break
            self.expect("=", "'=' after the result names")
        self.skip_ws()
        if self.peek("return") or self.peek("func.return"):
            if result_names:
                raise self.error("'return' has no results", start)
            return self.parse_return(start)
        if not self.peek('"'):
            raise self.error(f"expected an op name in quotes (generic form), found {self.found()}")
        name_pos = self.pos
        name = self.parse_string()
        if not _OP_NAME.match(name):
            raise self.error(f"bad op name {name!r}: expected a dotted name like \"aten.relu\" "
                             f"(letters, digits, '_', '$', '.', '-')", name_pos)
        self.expect("(", "'(' and the operand list")
        operands: list[Value] = []
        if not self.accept(")"):
            while True:
                operands.append(self.parse_value_ref())
                if self.accept(")"):
                    break
                self.expect(",", "',' or ')'")
        regions: list[Region] = []
        if self.peek("({"):
            self.expect("(")
            while True:
                regions.append(self.parse_region())
                if self.accept(")"):
                    break
                self.expect(",", "',' or ')' after a region")
        attrs = self.parse_attr_dict() if self.peek("{") else {}
        self.expect(":", "':' and the op's function type")
        type_pos = self.pos
        in_types, out_types = self.parse_function_type()
        if len(in_types) != len(operands):
            raise self.error(f"'{name}' has {len(operands)} operands but its type lists "
                             f"{len(in_types)}", type_pos)
        for i, (v, t) in enumerate(zip(operands, in_types)):
            if v.type != t:
                raise self.error(f"operand #{i} of '{name}' has type {v.type} but the op's type "
                                 f"says {t}", type_pos)
        if name == "func.return" and out_types:  # the printer writes it as `return`, resultless
            raise self.error("'func.return' has no results", type_pos)
        n_named = sum(c for _, c, _ in result_names)
        if n_named != len(out_types):
            raise self.error(f"'{name}' defines {n_named} result names but its type lists "
                             f"{len(out_types)} results", start)
        op = Op(name, operands, out_types, attrs, regions, self.location(start))
        loc = self.parse_optional_loc()
        if loc:
            op.loc = loc
        k = 0
        for rname, count, p in result_names:
            if count == 1:
                self.define(rname, op.results[k], p)
            else:
                for j in range(count):
                    self.define(f"{rname}#{j}", op.results[k + j], p)
            k += count
        return op

    def parse_return(self, start: int) -> Op:
        if not self.accept("func.return"):
            self.expect("return")
        operands: list[Value] = []
        if self.peek("%"):
            while True:
                operands.append(self.parse_value_ref())
                if not self.accept(","):
                    break
            self.expect(":", "':' and the returned types")
            types = []
            while True:
                types.append(self.parse_type())
                if not self.accept(","):
                    break
            if len(types) != len(operands):
                raise self.error(f"'return' has {len(operands)} operands but {len(types)} types")
            for i, (v, t) in enumerate(zip(operands, types)):
                if v.type != t:
                    raise self.error(f"return operand #{i} has type {v.type} but is written as {t}")
        op = Op("func.return", operands, [], {}, None, self.location(start))
        loc = self.parse_optional_loc()
        if loc:
            op.loc = loc
        return op

    def parse_region(self) -> Region:
        self.skip_ws()
        self.enter(self.pos)
        try:
            return self._parse_region()
        finally:
            self.leave()

    def _parse_region(self) -> Region:
        self.expect("{", "'{' to open a region")
        outer = dict(self.scope)
        block = Block()
        if self.accept("^"):
            m = self.match(_SUFFIX)
            if not m:
                raise self.error("expected a block label after '^'")
            if self.accept("("):
                if not self.accept(")"):
                    while True:
                        self.skip_ws()
                        p = self.pos
                        n = self.parse_value_name()
                        self.expect(":")
                        a = block.add_arg(self.parse_type())
                        self.define(n, a, p)
                        if self.accept(")"):
                            break
                        self.expect(",", "',' or ')'")
            self.expect(":", "':' after the block label")
        self.parse_ops_until_close(block)
        self.scope = outer  # values defined inside the region are not visible after it
        return Region([block])

    # ------------------------------------------------------------------ types

    def parse_type(self) -> Type:
        self.skip_ws()
        pos = self.pos
        m = self.match(_TENSOR)
        if m:
            dims = [d for d in m.group(1).split("x") if d]
            elt = m.group(2)
            if elt not in ELEMENT_TYPES:
                raise self.error(f"unknown element type '{elt}'; known: {', '.join(ELEMENT_TYPES)}",
                                 pos)
            shape = tuple(None if d == "?" else self.bounded_int(d, 0, I64_MAX, "dimension", pos)
                          for d in dims)
            return TensorType(shape, elt)
        if self.text.startswith("tensor<", self.pos):
            raise self.error("malformed tensor type; expected e.g. tensor<8x?x384xf32>")
        m = self.match(_SCALAR_TYPES)
        if m:
            return NONE if m.group(1) == "none" else ScalarType(m.group(1))
        raise self.error(f"expected a type, found {self.found()}")

    def parse_type_list_maybe_paren(self) -> list[Type]:
        if self.accept("("):
            types: list[Type] = []
            if self.accept(")"):
                return types
            while True:
                types.append(self.parse_type())
                if self.accept(")"):
                    return types
                self.expect(",", "',' or ')'")
        return [self.parse_type()]

    def parse_function_type(self) -> tuple[list[Type], list[Type]]:
        self.expect("(", "'(' to open the operand types")
        ins: list[Type] = []
        if not self.accept(")"):
            while True:
                ins.append(self.parse_type())
                if self.accept(")"):
                    break
                self.expect(",", "',' or ')'")
        self.expect("->", "'->' and the result types")
        return ins, self.parse_type_list_maybe_paren()

    # ------------------------------------------------------------------ attributes

    def parse_string(self) -> str:
        self.skip_ws()
        if not self.text.startswith('"', self.pos):
            raise self.error(f"expected a string, found {self.found()}")
        start = self.pos
        self.pos += 1
        out = bytearray()
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.error("unterminated string", start)
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                try:
                    return out.decode("utf-8")
                except UnicodeDecodeError:  # decoding with "replace" would not print back the same
                    raise self.error("string escapes do not form UTF-8 text", start) from None
            if ch == "\\":
                nxt = self.text[self.pos + 1: self.pos + 3]
                simple = {"n": b"\n", "t": b"\t", '"': b'"', "\\": b"\\"}
                if nxt[:1] in simple:
                    out += simple[nxt[:1]]
                    self.pos += 2
                elif re.fullmatch(r"[0-9A-Fa-f]{2}", nxt):
                    out.append(int(nxt, 16))
                    self.pos += 3
                else:
                    raise self.error("bad escape in string; use \\\\, \\\", \\n, \\t or \\XX hex")
            else:
                try:
                    out += ch.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate: only reachable from Python strings
                    raise self.error("string holds a lone surrogate code point") from None
                self.pos += 1

    def parse_attr_dict(self) -> dict[str, Attr]:
        self.expect("{")
        attrs: dict[str, Attr] = {}
        if self.accept("}"):
            return attrs
        while True:
            self.skip_ws()
            pos = self.pos
            if self.peek('"'):
                key = self.parse_string()
            else:
                m = self.match(_IDENT)
                if not m:
                    raise self.error(f"expected an attribute name, found {self.found()}")
                key = m.group(0)
            if key in attrs:
                raise self.error(f"duplicate attribute '{key}'", pos)
            attrs[key] = self.parse_attr() if self.accept("=") else UNIT
            if self.accept("}"):
                return attrs
            self.expect(",", "',' or '}' in the attribute dictionary")

    def parse_attr(self) -> Attr:
        self.skip_ws()
        pos = self.pos
        if self.peek('"'):
            return self.parse_string()
        if self.accept("["):
            self.enter(pos)
            try:
                items: list[Attr] = []
                if self.accept("]"):
                    return items
                while True:
                    items.append(self.parse_attr())
                    if self.accept("]"):
                        return items
                    self.expect(",", "',' or ']'")
            finally:
                self.leave()
        if self.match(_KEYWORD["true"]):
            return True
        if self.match(_KEYWORD["false"]):
            return False
        if self.match(_KEYWORD["unit"]):
            return UNIT
        m = self.match(_HEX)
        if m:
            self.expect(":", "': f64' after a hexadecimal float")
            t = self.parse_type()
            if t != ScalarType("f64"):
                raise self.error("hexadecimal float attributes must be f64", pos)
            digits = m.group(0)[2:].lstrip("0") or "0"
            bits = int(digits, 16) if len(digits) <= 16 else 1 << 64  # no giant int for a bound
            if bits >= 1 << 64:
                raise self.error("hexadecimal float literal has more than 64 bits", pos)
            return struct.unpack("<d", struct.pack("<Q", bits))[0]
        m = self.match(_NUMBER)
        if m:
            return self._number(m.group(0), m.group(1) is not None or m.group(2) is not None, pos)
        if self.peek("dense<") or self.peek("#"):
            raise self.error("this attribute kind is not supported: tensors belong in the weight "
                             "store (a parameter argument), not in the IR text")
        try:
            return TypeAttr(self.parse_type())
        except ParseError:
            raise self.error(f"expected an attribute value, found {self.found()}", pos) from None

    def _number(self, literal: str, is_float: bool, pos: int) -> Attr:
        """A number literal and its optional `: type`. The type is not kept (ints are i64, floats
        f64), so the value must be exactly what the type says: in range, finite, integral."""
        t: Type | None = None
        if self.peek(":") and not self.peek("::"):
            save = self.pos
            self.expect(":")
            try:
                t = self.parse_type()
            except ParseError:
                self.pos = save  # the ':' belongs to the op's type, not to this attribute
            if t is not None and not isinstance(t, ScalarType):
                raise self.error(f"a number's type must be a scalar like i64 or f32, not {t}", pos)
        if isinstance(t, ScalarType) and t.name.startswith(("f", "bf")):
            is_float = True
        elif t is not None and is_float:
            raise self.error(f"float literal {_shorten(literal)} cannot have integer type {t}",
                             pos)
        if is_float:
            value = float(literal)
            if not math.isfinite(value):
                raise self.error(f"float literal {_shorten(literal)} is out of range for f64; "
                                 f"write infinity as 0x7FF0000000000000 : f64", pos)
            return value
        name = t.name if t is not None else "i64"
        lo, hi = _INT_RANGES.get(name, (I64_MIN, I64_MAX))
        value = self.bounded_int(literal, lo, hi, f"{name} integer", pos)
        return bool(value) if name == "i1" else value

    def parse_optional_loc(self) -> Location | None:
        if not self.peek("loc("):
            return None
        self.expect("loc(")
        pos = self.pos
        if self.peek('"'):
            file = self.parse_string()
            if self.accept(":"):
                line = self.match(_UINT)
                if not line:
                    raise self.error("expected a line number in loc(\"file\":line:col)")
                self.expect(":")
                col = self.match(_UINT)
                if not col:
                    raise self.error("expected a column number in loc(\"file\":line:col)")
                self.expect(")")
                bound = (1 << 32) - 1  # MLIR keeps both as unsigned 32-bit
                return Location(file,
                                self.bounded_int(line.group(0), 0, bound, "line", line.start()),
                                self.bounded_int(col.group(0), 0, bound, "column", col.start()))
            self.expect(")")
            return Location(file, 0, 0)
        depth = 1  # some other location form (unknown, fused, callsite): skip it
        for m in _PARENS.finditer(self.text, self.pos):
            depth += 1 if m.group(0) == "(" else -1
            if not depth:
                self.pos = m.end()
                return None
        raise self.error("unterminated loc(...)", pos)


def parse_module(text: str, filename: str = "<string>", line_offset: int = 0) -> Module:
    """Parse IR text into a `Module`; raises `ParseError` at the bad place."""
    return Parser(text, filename, line_offset).parse_module()
