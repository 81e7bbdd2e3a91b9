"""Fixtures of the parser fuzz tests: Hypothesis profiles and the seed corpus.

Profiles (chosen by SPOKESHAVE_FUZZ_PROFILE, default "ci"; see test_parser_fuzz.py):

* "ci": derandomized and small, so a run is deterministic and the directory stays in its
  time budget (about 25 s on two cores, model exports included);
* "fuzz": fifty times the examples, a fresh random seed each run, failures remembered in
  .pytest_cache/hypothesis (ignored by git) and replayed first next time.
"""
from __future__ import annotations

import os

import pytest
from fuzz_corpus import TESTS, build_seeds
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
    HealthCheck.large_base_example, HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile(
    "fuzz", max_examples=5000, derandomize=False,
    database=DirectoryBasedExampleDatabase(str(TESTS.parent / ".pytest_cache" / "hypothesis")),
    **_COMMON)
PROFILE = os.environ.get("SPOKESHAVE_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)


@pytest.fixture(scope="session")
def seeds(cases) -> list[tuple[str, str]]:
    """(name, IR text) pairs, the fuzzers' starting points (fuzz_corpus.py); real models first,
    from the session's shared compiles (tests/conftest.py)."""
    return build_seeds(lambda name: cases(name).compiled(""))
