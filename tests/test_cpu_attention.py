"""The CPU backend's generated attention kernel (`backends/cpu/attention.py`) against the
reference backend (torch's `scaled_dot_product_attention`).

Tolerance: max |got - want| <= 1e-5 * max |want|, as for every float path (`test_rows.py`):
the kernel sums scores and values in its own order and uses `spk_exp`.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from spokeshave.backends.cpu import attention
from spokeshave.compiler.target import Target
from spokeshave.compiler.weights import WeightStore

import spokeshave


def _text(h: int, d: int, mask: str | None, attrs: str = "") -> str:
    t = f"tensor<?x{h}x?x{d}xf32>"
    m = {"bool": "tensor<?x1x?x?xi1>", "float": "tensor<?x1x?x?xf32>"}.get(mask)
    args = f"%q: {t}, %k: {t}, %v: {t}" + (f", %m: {m}" if m else "")
    ops = "%q, %k, %v" + (", %m" if m else "")
    types = f"{t}, {t}, {t}" + (f", {m}" if m else "")
    return (f"func.func @f({args}) -> {t} {{\n"
            f'  %0 = "aten.scaled_dot_product_attention"({ops}) {attrs} : ({types}) -> {t}\n'
            f"  return %0 : {t}\n}}")


def _compile(text: str, backend: str = "cpu", target: Target | None = None):
    return spokeshave.compile_module(spokeshave.parse(text), WeightStore({}), pipeline="fuse",
                                     backend=backend, target=target)


def _ymm_target() -> Target:
    """This machine without its AVX-512 features: the kernel's 8-lane form (AVX2's), which
    every x86-64 host with AVX2 runs, whatever width its own kernels use."""
    host = Target.host()
    return dataclasses.replace(host, features=frozenset(f for f in host.features
                                                        if not f.startswith("avx512")))


def _heads(g, b, s, h, d, permuted):
    x = torch.randn(b, s, h, d, generator=g)
    return x.permute(0, 2, 1, 3) if permuted else x.permute(0, 2, 1, 3).contiguous()


CASES = [  # batch, heads, query rows, keys, head dim, mask, causal, q/k/v as permuted views
    (2, 3, 5, 7, 32, None, False, True),
    (2, 3, 33, 70, 32, "bool", False, True),      # an odd last row pair, keys past one chunk
    (1, 2, 40, 40, 64, None, True, False),
    (2, 2, 17, 130, 16, "float", False, False),
    (1, 4, 1, 9, 64, "bool", False, True),        # one query row (decode)
    (3, 2, 64, 128, 32, "bool", False, True),     # MiniLM's shape class
]


# the target's own width, and (on two cases) the 8-lane AVX2 form wherever AVX2 runs
WIDTHS = ([pytest.param(c, "host", id="x".join(map(str, c[:5])) + f"-{c[5]}-{c[6]}") for c in CASES]
          + [pytest.param(CASES[i], "ymm", id="x".join(map(str, CASES[i][:5])) + f"-{CASES[i][5]}-ymm")
             for i in (2, 5)])


@pytest.mark.parametrize("case,width", WIDTHS)
def test_generated_attention_matches_the_reference(case, width):
    b, h, sq, sk, d, mask, causal, permuted = case
    if width == "ymm" and "avx2" not in Target.host().features:
        pytest.skip("the 8-lane form is compiled for AVX2; this host has none")
    text = _text(h, d, mask, "{is_causal = true}" if causal else "")
    cm = _compile(text, target=_ymm_target() if width == "ymm" else None)
    ref = _compile(text, "reference")
    (plan,) = cm.executable.plans.values()
    assert [s.kind for s in plan.steps] == ["attention"]
    lanes = 16 if cm.target.simd_bits >= 512 else 8
    par, ds = 2 if lanes == 16 else 1, attention.value_slice(d, lanes)
    kv = attention.key_vectors(d, lanes, cm.target.cache("l1d"))
    assert f"L = {lanes}, KV = {kv}, KC = KV * L, PAR = {par}, DS = {ds};" in plan.steps[0].source
    g = torch.Generator().manual_seed(sq * 7 + sk)
    args = [_heads(g, b, sq, h, d, permuted), _heads(g, b, sk, h, d, permuted),
            _heads(g, b, sk, h, d, permuted)]
    if mask == "bool":
        m = torch.rand(b, 1, sq, sk, generator=g) > 0.4
        m[..., 0] = True
        if sq > 1:
            m[0, 0, 1, :] = False     # a query row with every key masked: zeros, as torch
        args.append(m)
    elif mask == "float":
        args.append(torch.randn(b, 1, sq, sk, generator=g))
    got, want = cm(*args), ref(*args)
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    assert err <= 1e-5 * want.abs().max().item(), err
    if mask == "bool" and sq > 1:
        assert torch.equal(got[0, :, 1], torch.zeros_like(got[0, :, 1]))
    # laid out [B, Sq, H, D]: the head-merging permute after attention is a free view
    assert got.permute(0, 2, 1, 3).is_contiguous()


def test_a_broadcast_mask_is_read_by_strides():
    text = _text(2, 32, "bool")
    cm, ref = _compile(text), _compile(text, "reference")
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, n, 32, generator=g) for n in (6, 11, 11))
    m = (torch.rand(2, 1, 1, 11, generator=g) > 0.3).expand(2, 1, 6, 11)
    err = (cm(q, k, v, m) - ref(q, k, v, m)).abs().max().item()
    assert err <= 1e-5


def test_grouped_query_heads_give_the_bits_of_repeated_keys_and_values():
    t = "tensor<?x{}x?x32xf32>"
    text = (f"func.func @f(%q: {t.format(6)}, %k: {t.format(2)}, %v: {t.format(2)}) -> {t.format(6)} {{\n"
            f'  %0 = "aten.scaled_dot_product_attention"(%q, %k, %v) {{enable_gqa = true}} : '
            f"({t.format(6)}, {t.format(2)}, {t.format(2)}) -> {t.format(6)}\n  return %0 : {t.format(6)}\n}}")
    gqa, plain = _compile(text), _compile(_text(6, 32, None))
    assert [s.kind for p in gqa.executable.plans.values() for s in p.steps] == ["attention"]
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 6, 9, 32, generator=g)
    k, v = (torch.randn(2, 2, 9, 32, generator=g) for _ in range(2))
    got = gqa(q, k, v)
    assert torch.equal(got, plain(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


@pytest.mark.parametrize("attrs,d,why", [
    ("{dropout_p = 0.1}", 32, "dropout"),
    ("", 24, "a head dim that is not a multiple of 16"),
])
def test_forms_the_kernel_does_not_cover_take_the_library_path(attrs, d, why):
    module = spokeshave.parse(_text(2, d, None, attrs))
    op = next(o for o in module.entry.body.ops if o.name == "aten.scaled_dot_product_attention")
    assert attention.attention_step(op, 48 * 1024) is None, why


def test_a_working_set_past_l1_takes_the_library_path():
    module = spokeshave.parse(_text(2, 64, None))
    op = next(o for o in module.entry.body.ops if o.name == "aten.scaled_dot_product_attention")
    assert attention.working_set(64) == 40 * 1024
    assert attention.working_set(64, lanes=8) == 24 * 1024   # AVX2: 32-key blocks
    # the value pass's output columns per register slice: whole at D = 64 on zmm, halves on
    # ymm (2 rows x 8 vectors + 3 operands would pass AVX2's 16 registers)
    slices = [attention.value_slice(d, lanes) for d, lanes in ((64, 16), (64, 8), (32, 8), (128, 16))]
    assert slices == [64, 32, 32, 64]
    assert attention.attention_step(op, 48 * 1024) is not None
    assert attention.attention_step(op, 32 * 1024) is None     # an L1 of 32 KiB
    # the key block: 8 vectors where 32 registers hold 2 x 8 score chains and it fits L1
    assert attention.working_set(32, 16, 8) == 36 * 1024
    assert attention.key_vectors(32, 16, 48 * 1024) == 8
    assert attention.key_vectors(32, 16, 32 * 1024) == 4
    assert attention.key_vectors(32, 8, 48 * 1024) == 4         # AVX2's 16 registers
    assert attention.key_vectors(64, 16, 48 * 1024) == 4
    assert attention.key_vectors(64, 16, 32 * 1024) is None
    assert attention.attention_step(op, None) is None          # no known L1


def test_key_blocks_masked_whole_are_skipped_and_long_rows_stay_exact():
    # 300 keys: five blocks, the last partial; a causal mask skips the blocks past each pair
    text = _text(2, 64, "bool")
    cm, ref = _compile(text), _compile(text, "reference")
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 300, 64, generator=g) for _ in range(3))
    causal = torch.ones(300, 300, dtype=torch.bool).tril()[None, None]
    got, want = cm(q, k, v, causal), ref(q, k, v, causal)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    src = next(s.source for p in cm.executable.plans.values() for s in p.steps)
    assert "if (!any) continue;" in src
