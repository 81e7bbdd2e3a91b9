"""Input that is not UTF-8 text: `decode_source`, and `spokeshave-opt` on a binary file.

A binary file, a UTF-16 or Latin-1 file, or text with a NUL byte is one located error,
`FILE:LINE:COL: error: not UTF-8 text: invalid byte 0x.. at byte offset N`, exit status 1,
never a UnicodeDecodeError traceback. A UTF-8 byte-order mark is accepted and dropped.
One real subprocess (what users run); the other CLI cases call `opt.main` in-process, since
each subprocess pays torch's import again.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from spokeshave import opt
from spokeshave.compiler.errors import ParseError
from spokeshave.compiler.parser import decode_source

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOOD = "func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n  return %x : tensor<4xf32>\n}\n"
# An ELF-like header: NUL bytes (valid UTF-8) first, the first invalid byte at offset 24.
BINARY = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x03\x00>\x00\x01\x00\x00\x00" + b"\x8f\x10\x00\x00"


def test_spokeshave_opt_on_a_binary_file(tmp_path):
    path = tmp_path / "a.out"
    path.write_bytes(BINARY)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "spokeshave.opt", str(path), "-p", "cse"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.stderr.strip() == (f"{path}:1:25: error: not UTF-8 text: invalid byte 0x8f at byte "
                                   f"offset 24; spokeshave-opt reads MLIR text files"), proc.stderr
    assert proc.stdout == ""


class _Stdin:
    """What `sys.stdin` offers: `buffer` holds the bytes."""

    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("data,expected", [
    (b"// \xff\xfe\n", "<stdin>:1:4: error: not UTF-8 text: invalid byte 0xff at byte offset 3"),
    (GOOD.encode("utf-16"), "<stdin>:1:1: error: not UTF-8 text: invalid byte 0xff at byte offset 0"),
    (b"// caf\xe9\n", "<stdin>:1:7: error: not UTF-8 text: invalid byte 0xe9 at byte offset 6"),
    (GOOD.encode().replace(b"return", b"ret\x00urn"), "<stdin>:2:6: error: binary file: NUL byte at byte offset 56"),
], ids=["invalid-start-byte", "utf-16", "latin-1", "nul"])
def test_spokeshave_opt_on_bad_stdin(monkeypatch, capsys, data, expected):
    monkeypatch.setattr(sys, "stdin", _Stdin(data))
    assert opt.main(["-", "-p", "cse"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(expected), err
    assert "Traceback" not in err and out == ""


def test_spokeshave_opt_accepts_a_byte_order_mark(tmp_path, capsys):
    path = tmp_path / "bom.mlir"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert opt.main([str(path)]) == 0
    assert capsys.readouterr().out == GOOD


@pytest.mark.parametrize("data,line,col,offset", [
    (b"ab\ncd\xc3", 2, 3, 5),                      # truncated two-byte sequence at the end
    (b"\xef\xbb\xbfab\n\xe2\x82\xacc\xed\xa0\x80", 2, 3, 10),  # BOM, a euro sign, a surrogate
    ("é\n\n€x".encode() + b"\xc0\xaf", 3, 3, 8),   # an overlong '/'
], ids=["truncated", "surrogate-after-bom", "overlong"])
def test_decode_source_points_at_the_first_bad_byte(data, line, col, offset):
    with pytest.raises(ParseError) as e:
        decode_source(data, "x.mlir")
    assert (e.value.loc.line, e.value.loc.col) == (line, col)
    assert f"invalid byte 0x{data[offset]:02x} at byte offset {offset};" in str(e.value)
    assert str(e.value).startswith(f"x.mlir:{line}:{col}: error: not UTF-8 text")


def test_decode_source_keeps_text_and_drops_one_bom():
    assert decode_source(GOOD.encode(), "x") == GOOD
    assert decode_source(b"\xef\xbb\xbf\xef\xbb\xbfa", "x") == "\ufeffa"
    assert decode_source(b"", "x") == ""


def test_spokeshave_opt_on_a_text_stdin(monkeypatch, capsys):
    """A replaced `sys.stdin` without bytes (io.StringIO) is read as text, checked the same."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("// \ud800\n" + GOOD))
    assert opt.main(["-"]) == 1
    assert capsys.readouterr().err.startswith("<stdin>:1:4: error: not UTF-8 text: invalid byte 0xed")
    monkeypatch.setattr(sys, "stdin", io.StringIO(GOOD))
    assert opt.main(["-"]) == 0
    assert capsys.readouterr().out == GOOD
