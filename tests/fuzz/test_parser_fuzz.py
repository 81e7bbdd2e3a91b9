"""Fuzzing the IR parser: no input makes it raise anything but a located `ParseError`.

The property, for every input text: `parse_module(text)` returns a `Module` or raises a
`ParseError` whose line and column lie inside the text. Any other exception (IndexError,
ValueError, RecursionError, OverflowError, UnicodeEncodeError...) is a parser bug. A text
that parses must print and parse again to the same text (`print(parse(print(m))) ==
print(m)`), with and without locations. Inputs come from Hypothesis: random bytes and text,
token soup, modules generated from the grammar with extreme values in every slot,
truncations and token-, character- and byte-level mutations of the seed corpus
(fuzz_corpus.py: printed IR of real models, the FileCheck cases, a hand-written module),
nesting and number extremes, and every input that once broke the parser (`REGRESSIONS`).

Profiles, chosen by the environment variable SPOKESHAVE_FUZZ_PROFILE:

    python -m pytest -q tests/fuzz                                  # "ci" (default): derandomized,
                                                                    #   modest counts, ~25 s
    SPOKESHAVE_FUZZ_PROFILE=fuzz python -m pytest -q tests/fuzz     # 50x the examples, a new
                                                                    #   random seed every run

An input the "fuzz" profile finds belongs in `REGRESSIONS` once fixed, so "ci" keeps it.
"""
from __future__ import annotations

import re

import pytest
from fuzz_corpus import HANDWRITTEN, with_locations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spokeshave.compiler.errors import ParseError
from spokeshave.compiler.ir import Module
from spokeshave.compiler.parser import MAX_NESTING, decode_source, parse_module
from spokeshave.compiler.printer import print_module

FILE = "fuzz.mlir"


def fuzz_settings(share: float):
    """Explicit per-test settings: `share` of the active profile's example count (so the
    "fuzz" profile scales every test), its derandomization, no deadline."""
    profile = settings()
    return settings(deadline=None, max_examples=max(1, int(profile.max_examples * share)),
                    derandomize=profile.derandomize,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


def check(text: str) -> Module | None:
    """The property. Returns the module, or None when the text is (cleanly) rejected."""
    try:
        module = parse_module(text, FILE)
    except ParseError as e:
        assert_located(e, text)
        return None
    assert isinstance(module, Module)
    for debug_info in (False, True):
        printed = print_module(module, debug_info=debug_info)
        try:
            again = print_module(parse_module(printed, "printed.mlir"), debug_info=debug_info)
        except ParseError as e:
            raise AssertionError(f"the printed form of a parsed text does not parse: {e}\n"
                                 f"--- input\n{text}\n--- printed\n{printed}") from None
        assert again == printed, f"no round trip (debug_info={debug_info}) of\n{text}"
    return module


def assert_located(e: ParseError, text: str, file: str = FILE) -> None:
    lines = text.split("\n")
    assert e.loc.file == file
    assert 1 <= e.loc.line <= len(lines) + 1, (e.loc, len(lines))
    line = lines[e.loc.line - 1] if e.loc.line <= len(lines) else ""
    assert 1 <= e.loc.col <= len(line) + 1, (e.loc, line[:200])
    assert str(e).startswith(f"{file}:{e.loc.line}:{e.loc.col}: error: "), str(e)[:300]


# ------------------------------------------------------------------ tokens and mutations

# Covers every character (the last branch), so joining the tokens gives the text back.
TOKEN = re.compile(r"""
    \s+ | //[^\n]*
  | %[A-Za-z0-9_$.\-]+(?:[:#]\d+)? | @[A-Za-z0-9_$.\-]+ | \^[A-Za-z0-9_$.\-]+
  | "(?:[^"\\\n]|\\.)*"?
  | 0x[0-9A-Fa-f]+ | [-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?
  | tensor<[^>\s]*>?
  | [A-Za-z_][A-Za-z0-9_$.]*
  | -> | .
""", re.X | re.S)

# Tokens no seed has, each aimed at a limit or an error path of the parser, by class: a
# mutation may put one where a token of the same class stood, so the parse gets as far as
# converting it (most random edits stop the parser at a syntax error before any value).
NUMBERS = [
    "0", "-0", "+5", "-1", "1.", "1.5", "-0.0", "1.5e+308", "1e999", "-1e999", "1e-999",
    "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "99999999999999999999999", "1" * 5000, "0" * 5000 + "1", "1" * 400 + " : f32", "2 : i1",
    "1 : i1", "256 : ui8", "1.5 : i64", "3 : tensor<4xf32>", "3 : none", "0x", "0x1F",
    "0x7FF0000000000000 : f64", "0x7FF0000000000001 : f64", "0x1FFFFFFFFFFFFFFFFF : f64",
    "0x" + "F" * 300 + " : f64", "0x3FF0000000000000 : f32", "٣",
]
STRINGS = ['""', '"a\\22b"', '"\\FF"', '"\\E2\\82"', '"\\0A"', '"\\"', '"\\q"', '"\ud800"',
           '"\U0010ffff"', '"a\nb"', '"func.return"', '"spk.fused"', '"spk.yield"', '"x y"']
TYPES = ["tensor<", "tensor<99999999999999999999999xf32>", "tensor<" + "9" * 5000 + "xf32>",
         "tensor<?x?xcomplex<f32>>", "tensor<f32>", "tensor<4xq7>", "tensor<4x4>",
         "tensor<" + "1x" * 2000 + "f32>", "tensor<٣xf32>", "i1", "i8", "ui8", "index", "none",
         "f64", "bf16", "f8E4M3FN", "complex<f32>"]
VALUES = ["%0", "%0#1", "%0:2", "%0:0", "%0:-1", "%1#99", "%x#-1", "%0#" + "9" * 5000,
          "%0:" + "9" * 5000, "%", "%0#", "%-", "%$.x"]
INTERESTING = NUMBERS + STRINGS + TYPES + VALUES + [
    "{", "}", "(", ")", "[", "]", "<", ">", ",", ":", "=", "->", "@", "^", "^bb0", '"', "\\",
    "#", "x", "?", "({", "})", "}, {", "::", "true", "false", "unit", "dense<1.0>", "#map",
    "loc(", ")", 'loc("f":1:2)', "loc(unknown)", 'loc("f")', 'loc("f":' + "9" * 30 + ":1)",
    'loc("f":' + "9" * 5000 + ":1)", 'loc("f":-1:1)', "loc(fused[", "module",
    "module attributes {x}", "func.func", "func", "return", "func.return", "attributes",
    '{spk.param = "w"}', "\x00", "\t", "\r", "\x0b", "\x1c", "\u00a0", "\u2028", "\ufeff",
    "\U0010ffff", "\n", "// comment\n", "\n// -----\n", "[" * 150, "]" * 150,
]


def same_class(token: str) -> list[str]:
    """The INTERESTING tokens that could stand where `token` does."""
    if re.match(r"[-+]?\d", token):
        return NUMBERS
    if token.startswith('"'):
        return STRINGS
    if token.startswith("tensor<") or token in TYPES:
        return TYPES
    if token.startswith("%"):
        return VALUES
    return INTERESTING


@st.composite
def window(draw, text: str, max_lines: int = 300) -> tuple[str, str, str]:
    """(before, window, after): a run of at most `max_lines` lines of `text`. Mutations go in
    the window (tokenizing a whole model per example would be the slow part); the whole text
    is parsed, so a mutation that keeps the IR valid still reaches the round trip."""
    lines = text.splitlines(keepends=True)
    if len(lines) <= max_lines:
        return "", text, ""
    start = draw(st.integers(0, len(lines) - 1))
    end = min(len(lines), start + draw(st.integers(1, max_lines)))
    return "".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:])


@st.composite
def token_mutation(draw, text: str) -> str:
    """`text` with 1 to 6 token edits: delete, duplicate, swap, replace by another of its
    tokens, insert or substitute an INTERESTING one (often one of the same class)."""
    toks = TOKEN.findall(text)
    assert "".join(toks) == text
    if not toks:
        return draw(st.sampled_from(INTERESTING))
    solid = [i for i, t in enumerate(toks) if not t.isspace()] or list(range(len(toks)))

    def index() -> int:  # mostly real tokens; whitespace too, as deleting it glues tokens
        if draw(st.integers(0, 3)) == 0:
            return draw(st.integers(0, len(toks) - 1))
        return solid[draw(st.integers(0, len(solid) - 1))]

    for _ in range(draw(st.integers(1, 6))):
        i, j = index(), index()
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert", "sub",
                                     "like", "like"]))
        if kind == "delete":
            toks[i] = ""
        elif kind == "duplicate":
            toks[i] = toks[i] * 2
        elif kind == "swap":
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "replace":
            toks[i] = toks[j]
        elif kind == "insert":
            toks[i] = draw(st.sampled_from(INTERESTING)) + toks[i]
        elif kind == "sub":
            toks[i] = draw(st.sampled_from(INTERESTING))
        else:
            toks[i] = draw(st.sampled_from(same_class(toks[i])))
    return "".join(toks)


@st.composite
def char_mutation(draw, text: str) -> str:
    """`text` with 1 to 4 characters inserted, replaced or deleted (any code point)."""
    chars = list(text) or [""]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(chars) - 1))
        c = draw(st.one_of(st.characters(), st.sampled_from('{}()[]<>,:=%@"\\#x?0123456789\n ')))
        kind = draw(st.sampled_from(["insert", "replace", "delete"]))
        chars[i] = c + chars[i] if kind == "insert" else c if kind == "replace" else ""
    return "".join(chars)


# ------------------------------------------------------------------ generated modules
# Text built piece by piece from the grammar, with extreme values in every slot: unlike a
# mutation, it reaches each value's conversion (and the printer) with the rest well formed.

def rarely(usual, odd, one_in: int = 30):
    """`odd` about once in `one_in` draws, else `usual`. (Repeating a branch of one_of does
    not weight it much, and integer draws favour their bounds: the odd case is a middle value.)"""
    return st.tuples(st.integers(0, one_in - 1), usual, odd).map(
        lambda p: p[2] if p[0] == one_in // 2 else p[1])


# Any length up to past int()'s 4300-digit limit, so conversions and bounds are all reached.
_digits = st.one_of(st.integers(0, 1 << 70).map(str), st.text("0123456789", min_size=1, max_size=30),
                    st.integers(1, 6000).map(lambda n: "9" * n))
_int_text = st.tuples(st.sampled_from(["", "-", "+"]), _digits).map("".join)
_float_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(_int_text, st.sampled_from([".", ".5", ".000"]), st.sampled_from(["", "e", "e-", "E+"]),
              _digits).map(lambda p: p[0] + p[1] + (p[2] + p[3] if p[2] else "")))
_hex_text = st.text("0123456789abcdefABCDEF", min_size=1, max_size=40).map(lambda h: "0x" + h)
_elt = st.sampled_from(["f32", "f16", "bf16", "f64", "i64", "i32", "i1", "ui8", "i8",
                        "complex<f32>", "f8E5M2"] * 6 + ["q7", "complex<q>"])
_scalar = st.sampled_from(["i1", "i8", "i16", "i32", "i64", "ui8", "f16", "bf16", "f32", "f64",
                           "index", "none"])
_dims = st.lists(st.one_of(st.just("?"), st.integers(0, 64).map(str)), max_size=4)
_odd_dims = st.tuples(_dims, _digits, _dims).map(lambda p: p[0] + [p[1]] + p[2])
_tensor = st.tuples(rarely(_dims, _odd_dims), _elt).map(
    lambda p: "tensor<" + "".join(d + "x" for d in p[0]) + p[1] + ">")
type_text = st.one_of(_scalar, _tensor)
# Raw characters (any code point, surrogates too), escaped characters (as the printer writes
# them), the named escapes. Rarely (a module has many strings and types, and the first
# rejected one hides the rest) a string ends in a random byte's escape, mostly not UTF-8,
# and a shape has a dimension of any length.
_raw_char = st.characters(exclude_categories=()).map(
    lambda c: {'"': '\\"', "\\": "\\\\", "\n": "\\n"}.get(c, c))
_escaped_char = st.characters(codec="utf-8").map(lambda c: "".join(f"\\{b:02X}" for b in c.encode("utf-8")))
_string_part = st.one_of(_raw_char, _escaped_char, st.sampled_from(["\\n", "\\t", '\\"', "\\\\"]))
_good_string = st.lists(_string_part, max_size=12).map(lambda ps: '"' + "".join(ps) + '"')
_odd_string = st.tuples(_good_string, st.integers(0, 255)).map(lambda p: p[0][:-1] + f"\\{p[1]:02X}\"")
string_text = rarely(_good_string, _odd_string)
_typed = st.tuples(st.one_of(_int_text, _float_text), type_text).map(" : ".join)
attr_text = st.recursive(
    st.one_of(_int_text, _float_text, _typed, string_text, type_text,
              _hex_text.map(lambda h: h + " : f64"), st.sampled_from(["true", "false", "unit"])),
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=12)
_key = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_$.]{0,8}", fullmatch=True), string_text)
attr_dict_text = st.lists(st.tuples(_key, st.one_of(st.none(), attr_text)), max_size=4).map(
    lambda kvs: "{" + ", ".join(k if v is None else f"{k} = {v}" for k, v in kvs) + "}")
_op_name = st.one_of(st.sampled_from(['"aten.relu"', '"spk.fused"', '"func.return"', '"spk.yield"']),
                     st.from_regex(r"[A-Za-z_][A-Za-z0-9_$.\-]{0,12}", fullmatch=True).map(
                         lambda n: f'"{n}"'), string_text)
_loc = st.one_of(st.just(""), st.tuples(string_text, _digits, _digits).map(
    lambda p: f" loc({p[0]}:{p[1]}:{p[2]})"), st.just(" loc(unknown)"))


@st.composite
def generated_module(draw) -> str:
    """One function: typed arguments (some parameters), an op with a random name, operands,
    optional region, attributes, 1-3 results, and a return of them all."""
    arg_types = draw(st.lists(type_text, min_size=1, max_size=3))
    args = [f"%a{i}: {t}" + (f" {{spk.param = {draw(string_text)}}}" if draw(st.booleans()) else "")
            for i, t in enumerate(arg_types)]
    used = draw(st.lists(st.integers(0, len(arg_types) - 1), max_size=3))
    res_types = draw(st.lists(type_text, min_size=1, max_size=3))
    n = len(res_types)
    lhs = "%0" if n == 1 else f"%0:{n}"
    region = ""
    if draw(st.booleans()):  # a fused-style region yielding its block argument
        t = draw(type_text)
        region = (f' ({{\n  ^bb0(%b: {t}):\n    "spk.yield"(%b) : ({t}) -> ()'
                  f'{draw(_loc)}\n  }})')
    attrs = draw(attr_dict_text)
    op = (f'  {lhs} = {draw(_op_name)}({", ".join(f"%a{i}" for i in used)}){region} '
          f'{attrs if attrs != "{}" else ""} : ({", ".join(arg_types[i] for i in used)}) -> '
          f'({", ".join(res_types)}){draw(_loc)}')
    results = ["%0"] if n == 1 else [f"%0#{i}" for i in range(n)]
    return (f"func.func @{draw(st.from_regex(r'[A-Za-z0-9_$.-]{1,8}', fullmatch=True))}"
            f"({', '.join(args)}) -> ({', '.join(res_types)}) {{\n{op}\n"
            f"  return {', '.join(results)} : {', '.join(res_types)}\n}}{draw(_loc)}\n")


def a_seed(seeds):
    """Any seed, the real models' IR half of the time."""
    models = [s for s in seeds if not s[0].startswith(("filecheck", "handwritten"))]
    return st.one_of(st.sampled_from(models), st.sampled_from(seeds))


# ------------------------------------------------------------------ the seeds themselves


def test_seeds_behave(seeds):
    """Every seed parses or fails cleanly; the printed ones are fixed points already."""
    assert len(seeds) > 50
    for name, text in seeds:
        module = check(text)
        if not name.startswith("filecheck"):
            assert module is not None, name
            assert print_module(module, debug_info=name.endswith("+loc")) == text, name


def test_every_truncation_of_the_handwritten_module():
    """Each prefix of a module with every construct: all positions, not a sample."""
    for text in (HANDWRITTEN, with_locations(HANDWRITTEN)):
        for i in range(len(text) + 1):
            check(text[:i])


# ------------------------------------------------------------------ random inputs


@fuzz_settings(1.0)
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    check_bytes(data)


@fuzz_settings(1.0)
@given(st.text(max_size=2000))
def test_random_text(text):
    check(text)


def soup_vocabulary() -> list[str]:
    toks = {t for t in TOKEN.findall(HANDWRITTEN) if not t.isspace()}
    return sorted(toks) + INTERESTING


@fuzz_settings(1.5)
@given(st.lists(st.tuples(st.sampled_from(soup_vocabulary()), st.sampled_from(["", " ", "\n"])),
                max_size=80))
def test_token_soup(parts):
    check("".join(a + b for a, b in parts))


@fuzz_settings(1.5)
@given(data=st.data())
def test_structured_soup(data):
    """A valid function header, then soup: gets past `func.func` into op and attribute parsing."""
    vocab = soup_vocabulary()
    body = data.draw(st.lists(st.sampled_from(vocab), max_size=60))
    check("func.func @f(%x: tensor<4xf32>, %n: i64) -> tensor<4xf32> {\n  " + " ".join(body))


def check_bytes(data: bytes) -> None:
    """`decode_source` then the property; a decoding error points at the first bad byte."""
    try:
        text = decode_source(data, FILE)
    except ParseError as e:
        offset = int(re.search(r"at byte offset (\d+)", e.message).group(1))
        good = data[:offset].decode("utf-8", errors="replace").removeprefix("\ufeff")
        assert (e.loc.line, e.loc.col) == (good.count("\n") + 1, len(good) - good.rfind("\n")), e
        assert e.message.startswith(("not UTF-8 text: invalid byte 0x", "binary file: NUL byte"))
        if e.message.startswith("binary"):
            assert data[offset] == 0
        else:
            assert f"0x{data[offset]:02x}" in e.message
            data[:offset].decode("utf-8")  # the prefix before it is valid
        return
    check(text)


@fuzz_settings(1.5)
@given(generated_module())
def test_generated_modules(text):
    check(text)


@fuzz_settings(1.0)
@given(generated_module(), st.data())
def test_mutated_generated_modules(text, data):
    check(data.draw(token_mutation(text)))


# ------------------------------------------------------------------ mutated seeds


@fuzz_settings(0.5)
@given(data=st.data())
def test_truncations(seeds, data):
    """Cut anywhere, or just before, inside or after a token."""
    _, text = data.draw(a_seed(seeds))
    before, win, after = data.draw(window(text))
    toks = TOKEN.findall(win)
    if toks and data.draw(st.booleans()):
        k = data.draw(st.integers(0, len(toks) - 1))
        cut = len("".join(toks[:k])) + data.draw(st.integers(0, len(toks[k])))
    else:
        cut = data.draw(st.integers(0, len(win)))
    check(before + win[:cut])


@fuzz_settings(2.0)
@given(data=st.data())
def test_token_mutations(seeds, data):
    _, text = data.draw(a_seed(seeds))
    before, win, after = data.draw(window(text))
    check(before + data.draw(token_mutation(win)) + after)


@fuzz_settings(0.05)
@given(data=st.data())
def test_token_mutations_of_whole_models(seeds, data):
    """A few examples mutating anywhere in a whole model's text, not just in a window."""
    _, text = data.draw(st.sampled_from(seeds[:4]))
    check(data.draw(token_mutation(text)))


@fuzz_settings(1.0)
@given(data=st.data())
def test_char_mutations(seeds, data):
    _, text = data.draw(a_seed(seeds))
    before, win, after = data.draw(window(text, 40))
    check(before + data.draw(char_mutation(win)) + after)


@fuzz_settings(0.5)
@given(data=st.data())
def test_byte_mutations(seeds, data):
    """Flipped bytes: mostly a non-UTF-8 error at the right byte, sometimes text to parse."""
    _, text = data.draw(a_seed(seeds))
    raw = bytearray(text.encode("utf-8"))
    if data.draw(st.booleans()):
        raw[:0] = b"\xef\xbb\xbf"
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    check_bytes(bytes(raw))


# ------------------------------------------------------------------ limits, by hand

FUNC = """\
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {{
  %0 = "aten.foo"(%x) {{a = {attr}}} : (tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}}
"""


def nested_regions(depth: int) -> str:
    op = '"spk.yield"(%x) : (tensor<4xf32>) -> ()'
    for _ in range(depth):
        op = f'"spk.fused"() ({{\n{op}\n}}) : () -> ()'
    return f"func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {{\n{op}\nreturn %x : tensor<4xf32>\n}}\n"


@pytest.mark.parametrize("depth", [MAX_NESTING, MAX_NESTING + 1, 10000, 200000])
def test_deep_attribute_lists(depth):
    text = FUNC.format(attr="[" * depth + "1" + "]" * depth)
    module = check(text)
    if depth <= MAX_NESTING:
        assert module is not None
    else:
        with pytest.raises(ParseError, match="nesting too deep") as e:
            parse_module(text, FILE)
        assert (e.value.loc.line, e.value.loc.col) == (2, 28 + MAX_NESTING)


@pytest.mark.parametrize("depth", [MAX_NESTING, MAX_NESTING + 1, 10000])
def test_deep_regions(depth):
    text = nested_regions(depth)
    module = check(text)
    assert (module is not None) == (depth <= MAX_NESTING)
    if module is None:
        with pytest.raises(ParseError, match="nesting too deep"):
            parse_module(text, FILE)


def test_deep_nesting_leaves_the_stack_alone():
    """The limit must hold with a deep caller stack too (pytest's, hypothesis's)."""
    def recurse(n):
        return recurse(n - 1) if n else check(nested_regions(MAX_NESTING))
    assert recurse(300) is not None


@pytest.mark.parametrize("text", [
    "\n" * 200000,
    "// " + "x" * 1000000 + "\n",
    FUNC.format(attr='"' + "a" * 1000000 + '"'),
    FUNC.format(attr="[" + ", ".join(["1"] * 50000) + "]"),
    "func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n"
    + '  %0 = "aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>\n' * 20000,
    "".join(f"func.func @f{i}() {{\n  return\n}}\n" for i in range(5000)),
    'func.func @f() {\n  return loc(' + "(" * 100000 + ")" * 99999 + "\n}\n",
    "func.func @f(%x: tensor<" + "1x" * 100000 + "f32) {\n  return\n}\n",
    "func.func @f(%x: tensor<" + "1x" * 100000 + "f32>) {\n  return\n}\n",
], ids=["newlines", "long-comment", "long-string", "long-list", "many-ops", "many-functions",
        "deep-loc", "unclosed-type", "huge-rank"])
def test_long_inputs(text):
    check(text)


@pytest.mark.parametrize("attr,kept", [
    ("9223372036854775807", 9223372036854775807),
    ("-9223372036854775808", -9223372036854775808),
    ("9223372036854775808", None),
    ("99999999999999999999999", None),
    ("-99999999999999999999999", None),
    ("1" * 5000, None),
    ("0" * 5000 + "7", 7),
    ("99999999999999999999999 : f64", 1e23),
    ("1" + "0" * 400 + " : f32", None),
    ("1e308", 1e308),
    ("1e999", None),
    ("-1e999", None),
    ("1e-999", 0.0),
    ("1." + "5" * 10000, float("1." + "5" * 10000)),
    ("255 : ui8", 255),
    ("256 : ui8", None),
    ("1 : i1", True),
    ("2 : i1", None),
    ("1.5 : i64", None),
    ("3 : tensor<4xf32>", None),
    ("0x3FF0000000000000 : f64", 1.0),
    ("0x00000000000000003FF0000000000000 : f64", 1.0),
    ("0x1FFF0000000000000 : f64", None),
    ("0x" + "0" * 50 + "1 : f64", 5e-324),
    ("0x" + "F" * 100000 + " : f64", None),
    ("[99999999999999999999999]", None),
])
def test_numbers_are_kept_exactly_or_rejected(attr, kept):
    text = FUNC.format(attr=attr)
    module = check(text)
    if kept is None:
        assert module is None
    else:
        assert module is not None and module.entry.ops[0].attributes["a"] == kept


@pytest.mark.parametrize("snippet", [
    "tensor<99999999999999999999999xf32>", "tensor<9223372036854775808xf32>",
    "tensor<" + "9" * 5000 + "xf32>", "tensor<2x" + "9" * 30 + "x?xf32>", "tensor<٣xf32>",
])
def test_huge_or_odd_shapes_are_rejected(snippet):
    text = f"func.func @f(%x: {snippet}) -> {snippet} {{\n  return %x : {snippet}\n}}\n"
    with pytest.raises(ParseError) as e:
        parse_module(text, FILE)
    assert_located(e.value, text)
    assert (e.value.loc.line, e.value.loc.col) == (1, 18)


def test_largest_dimension_is_kept():
    t = "tensor<9223372036854775807x?xf32>"
    text = f"func.func @f(%x: {t}) -> {t} {{\n  return %x : {t}\n}}\n"
    assert print_module(check(text)) == text


# ------------------------------------------------------------------ regressions

M = "func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {{\n{}\n  return %x : tensor<4xf32>\n}}\n"
RELU = '"aten.relu"(%x) : (tensor<4xf32>) -> tensor<4xf32>'

# Inputs that made the original parser raise something other than a located ParseError, or
# accept text it then could not print back (or printed differently): one per bug.
REGRESSIONS = {
    "recursion-attr-list": FUNC.format(attr="[" * 10000),
    "recursion-regions": nested_regions(5000),
    "int-digits-limit-attr": FUNC.format(attr="9" * 5000),
    "int-digits-limit-shape": M.format(f"  %0 = {RELU.replace('4xf32>) ->', '9' * 5000 + 'xf32>) ->')}"),
    "int-digits-limit-result-number": M.format(f"  %0:2 = \"a.b\"(%x) : (tensor<4xf32>) -> (i64, i64)\n"
                                               f"  %1 = \"a.c\"(%0#{'1' * 5000}) : (i64) -> i64"),
    "int-digits-limit-result-count": M.format(f"  %0:{'2' * 5000} = {RELU}"),
    "int-digits-limit-loc": M.format(f'  %0 = {RELU} loc("m.py":{"1" * 5000}:1)'),
    "int-to-float-overflow": FUNC.format(attr="1" + "0" * 400 + " : f32"),
    "surrogate-in-string": FUNC.format(attr='"\ud800"'),
    "generic-return-with-result": M.format('  %0 = "func.return"(%x) : (tensor<4xf32>) -> tensor<4xf32>\n'
                                           '  %1 = "aten.relu"(%0) : (tensor<4xf32>) -> tensor<4xf32>'),
    "quote-in-op-name": M.format(f'  %0 = "a\\22b"{RELU[11:]}'),
    "newline-in-op-name": M.format(f'  %0 = "a\\0Ab"{RELU[11:]}'),
    "empty-op-name": M.format(f'  %0 = ""{RELU[11:]}'),
    "huge-shape-accepted": "func.func @f(%x: tensor<99999999999999999999999xf32>) {\n  return\n}\n",
    "inf-from-decimal-literal": FUNC.format(attr="1e999"),
    "arabic-digit-dimension": "func.func @f(%x: tensor<٣xf32>) -> tensor<٣xf32> {\n  return %x : tensor<٣xf32>\n}\n",
    "nbsp-as-whitespace": "func.func\u00a0@f() {\n  return\n}\n",
    "invalid-utf8-escape-replaced": FUNC.format(attr='"\\FF"'),
    "zero-result-count": M.format('  %0:0 = "a.b"(%x) : (tensor<4xf32>) -> ()'),
    "negative-result-count": M.format('  %0:-1, %1:2 = "a.b"(%x) : (tensor<4xf32>) -> (i64)'),
    "multi-and-single-result-same-name": M.format(f'  %0:2 = "a.b"(%x) : (tensor<4xf32>) -> (i64, i64)\n'
                                                  f'  %0 = {RELU}'),
    "bool-from-int-2": FUNC.format(attr="2 : i1"),
    "negative-loc-line": M.format(f'  %0 = {RELU} loc("m.py":-3:1)'),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regressions(name):
    text = REGRESSIONS[name]
    assert check(text) is None, f"{name}: accepted"


def test_quoted_key_ending_in_newline_round_trips():
    """A quoted attribute name ending in a newline must print quoted (found by fuzzing)."""
    assert check(M.format('  %0 = "aten.foo"(%x) {"A\\n"} : (tensor<4xf32>) -> tensor<4xf32>')) is not None
