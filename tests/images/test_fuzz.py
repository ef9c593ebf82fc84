"""Property test: mutated archives (bit flips, truncation, header edits) end only in success or our own errors.

CI-sized by default; set KEEPDOCKER_FUZZ_EXAMPLES for longer runs, or call
``keepdocker.testing.v1archives.run_fuzz(count, seed)`` (``uv run python benchmarks/fuzz_reader.py``).
"""

from __future__ import annotations

import os
import random
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepdocker.testing.v1archives import fuzz_one, mutate, random_v1_archive, run_fuzz

EXAMPLES = int(os.environ.get("KEEPDOCKER_FUZZ_EXAMPLES", "300"))


@cache
def bases() -> tuple[bytes, ...]:
    """A few small generated archives of different shapes to mutate."""
    return tuple(
        random_v1_archive(seed, layers=1 + seed % 3, leaves=1 + seed % 2, files=2, max_file_size=200, outer=outer).data
        for seed, outer in enumerate(["none", "none", "none", "gzip", "none", "bzip2"])
    )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.integers(0, 5), seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 4))
def test_mutated_archives_end_in_project_errors(base: int, seed: int, edits: int) -> None:
    """Upgrading a mutated archive succeeds or raises a KeepdockerError, leaving no DST on error and no temp file."""
    data = mutate(bases()[base], random.Random(seed), edits=edits)
    with tempfile.TemporaryDirectory() as tmp:
        fuzz_one(data, Path(tmp))  # raises on a foreign exception, a DST after an error, or leftovers


def test_fuzz_driver_reports_counts() -> None:
    """The reusable driver runs the requested number of cases and records no failures."""
    report = run_fuzz(60, seed=3)
    assert report.cases == 60 and not report.failures
    assert report.accepted + sum(report.refused.values()) == 60
