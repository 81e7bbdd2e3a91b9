"""A hand-written recursive-descent parser for the IR text form (MLIR generic syntax).

It accepts what the printer writes, plus what people write by hand in tests: an optional
`module { ... }` wrapper, comments, `loc(...)` trailers, named results and typed integer
attributes (`3 : i64`). Every error is a `ParseError` at `FILE:LINE:COL` with the offending
line and a caret, as `mlir-opt` reports it.
"""
from __future__ import annotations

import re
import struct

from .errors import Location, ParseError
from .ir import (ELEMENT_TYPES, NONE, UNIT, Attr, Block, Function, Module, Op, Region, ScalarType,
                 TensorType, Type, TypeAttr, Value)

_WS = re.compile(r"(?:\s+|//[^\n]*)+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$.]*")
_SUFFIX = re.compile(r"[A-Za-z0-9_$.\-]+")
_INT = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")
_HEX = re.compile(r"0x[0-9A-Fa-f]+")
_TENSOR = re.compile(r"tensor<((?:(?:\d+|\?)x)*)([A-Za-z][A-Za-z0-9]*(?:<[A-Za-z0-9]+>)?)>")
_SCALAR_TYPES = re.compile(r"(i1|i8|i16|i32|i64|ui8|f16|bf16|f32|f64|index|none)\b")


class Parser:
    def __init__(self, text: str, filename: str = "<string>", line_offset: int = 0):
        self.text = text
        self.filename = filename
        self.line_offset = line_offset
        self.pos = 0
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

    # ------------------------------------------------------------------ top level

    def parse_module(self) -> Module:
        module = Module()
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
        if any(g.name == f.name for g in module.functions):
            raise self.error(f"redefinition of function @{f.name}", start)
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
        if name in self.scope:
            raise self.error(f"redefinition of SSA value '%{name}'", pos)
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
            m = _INT.match(self.text, self.pos)
            if not m:
                raise self.error("expected a result number after '#'")
            self.pos = m.end()
            index = int(m.group(0))
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
                    m = _INT.match(self.text, self.pos)
                    if not m:
                        raise self.error("expected a result count after ':'")
                    self.pos = m.end()
                    count = int(m.group(0))
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
        name = self.parse_string()
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
            return TensorType(tuple(None if d == "?" else int(d) for d in dims), elt)
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
                return out.decode("utf-8", errors="replace")
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
                out += ch.encode("utf-8")
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
            items: list[Attr] = []
            if self.accept("]"):
                return items
            while True:
                items.append(self.parse_attr())
                if self.accept("]"):
                    return items
                self.expect(",", "',' or ']'")
        if self.match(re.compile(r"true\b")):
            return True
        if self.match(re.compile(r"false\b")):
            return False
        if self.match(re.compile(r"unit\b")):
            return UNIT
        m = self.match(_HEX)
        if m:
            self.expect(":", "': f64' after a hexadecimal float")
            t = self.parse_type()
            if t != ScalarType("f64"):
                raise self.error("hexadecimal float attributes must be f64", pos)
            bits = int(m.group(0), 16)
            if bits >= 1 << 64:
                raise self.error("hexadecimal float literal has more than 64 bits", pos)
            return struct.unpack("<d", struct.pack("<Q", bits))[0]
        m = self.match(_NUMBER)
        if m:
            is_float = m.group(1) is not None or m.group(2) is not None
            value: Attr = float(m.group(0)) if is_float else int(m.group(0))
            if self.peek(":") and not self.peek("::"):
                save = self.pos
                self.expect(":")
                try:
                    t = self.parse_type()
                except ParseError:
                    self.pos = save  # the ':' belongs to the op's type, not to this attribute
                    return value
                if isinstance(t, ScalarType) and t.name.startswith(("f", "bf")):
                    return float(value)
                if t == ScalarType("i1"):
                    return bool(value)
            return value
        if self.peek("dense<") or self.peek("#"):
            raise self.error("this attribute kind is not supported: tensors belong in the weight "
                             "store (a parameter argument), not in the IR text")
        try:
            return TypeAttr(self.parse_type())
        except ParseError:
            raise self.error(f"expected an attribute value, found {self.found()}", pos) from None

    def parse_optional_loc(self) -> Location | None:
        if not self.peek("loc("):
            return None
        self.expect("loc(")
        pos = self.pos
        if self.peek('"'):
            file = self.parse_string()
            if self.accept(":"):
                line = self.match(_INT)
                if not line:
                    raise self.error("expected a line number in loc(\"file\":line:col)")
                self.expect(":")
                col = self.match(_INT)
                if not col:
                    raise self.error("expected a column number in loc(\"file\":line:col)")
                self.expect(")")
                return Location(file, int(line.group(0)), int(col.group(0)))
            self.expect(")")
            return Location(file, 0, 0)
        depth = 1  # some other location form (unknown, fused, callsite): skip it
        while depth:
            if self.pos >= len(self.text):
                raise self.error("unterminated loc(...)", pos)
            c = self.text[self.pos]
            depth += c == "("
            depth -= c == ")"
            self.pos += 1
        return None


def parse_module(text: str, filename: str = "<string>", line_offset: int = 0) -> Module:
    """Parse IR text into a `Module`; raises `ParseError` at the bad place."""
    return Parser(text, filename, line_offset).parse_module()
