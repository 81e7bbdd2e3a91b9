"""Differential fuzzing of `fuse` + the CPU backend against the reference interpreter.

Random graphs (`graphs.py`: pointwise ops with broadcasting, last-dim reductions and norms,
float and every compressed linear with weights from the real quantizers, attention, views
and permutes, dynamic dims) are compiled with `pipeline="fuse", backend="cpu"`, called at
two sizes of their dynamic dims (one compile must serve both, without a fallback) and
compared with the reference interpreter on the unfused IR, at the tolerances `graphs.py`
states and justifies. A failure is shrunk by Hypothesis and printed as IR ready for
`spokeshave-opt`, with the input shapes and the seed.

The "ci" profile (default) runs a fixed, derandomized slice of 200 cases: about 10-20 s on
two cores with a warm kernel cache (generated C++ is cached by its text, and the small
vocabulary makes most units repeat). "fuzz" (SPOKESHAVE_FUZZ_PROFILE=fuzz) runs 50 times
as many with a fresh seed. Longer offline runs with counts: `python -m tests.fuzz --cases N`.
"""
from __future__ import annotations

from graphs import check, graphs
from hypothesis import HealthCheck, Phase, given, settings

_PROFILE = settings()  # the profile tests/fuzz/conftest.py loaded


@settings(max_examples=2 * _PROFILE.max_examples, derandomize=_PROFILE.derandomize,
          database=_PROFILE.database, deadline=None, print_blob=_PROFILE.print_blob,
          suppress_health_check=list(HealthCheck),
          phases=[p for p in Phase if p is not Phase.explain])  # explain writes patch files
@given(case=graphs())
def test_fused_cpu_matches_reference(case):
    result = check(case)
    assert result.status != "fail", result.report
