"""Fuzz the archive readers with mutated archives and print counts: only the project's own errors may come out.

Usage: ``uv run python benchmarks/fuzz_reader.py [--cases 10000] [--v2-cases 5000] [--attack-cases 2000]
[--seed 0] [--workers 2]``. Three phases, each split across worker processes with distinct seeds:

* **v1**: ``run_fuzz`` (keepdocker.testing.v1archives): mutated generated v1 archives (plain and gzip outer) through
  ``upgrade_archive``; a DST left after an error or a temporary file left behind also counts as a failure;
* **v2**: mutated Docker 1.10-24 archives (written by the upgrade itself) through ``read_archive``, the reader
  ``push --from-archive`` uses;
* **attacks**: mutated copies of every ``ATTACKS`` archive (bombs excluded: they are slow to build) through
  ``upgrade_archive``.

Prints cases, accepted, refusals by error class, failures (with the first tracebacks), seconds and cases/second;
exits 1 when any case ended in a foreign exception.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from keepdocker.errors import KeepdockerError
from keepdocker.images.docker_archive import read_archive
from keepdocker.images.upgrade import upgrade_archive
from keepdocker.testing.v1archives import ATTACKS, fuzz_one, mutate, random_v1_archive, run_fuzz

# The v1 reader logs accepted oddities (non-hex directory names, mismatched ids) as warnings: thousands here.
logging.getLogger("keepdocker").setLevel(logging.ERROR)

Outcome = tuple[int, int, dict[str, int], list[str]]  # cases, accepted, refused by class, failure tracebacks


def phase_v1(count: int, seed: int) -> Outcome:
    """run_fuzz on generated v1 archives."""
    report = run_fuzz(count, seed=seed)
    return report.cases, report.accepted, report.refused, [tb for _, tb in report.failures]


def _v2_bases(seed: int, work: Path) -> list[bytes]:
    bases = []
    for n, outer in enumerate(["none", "none", "gzip", "none"]):
        src = work / f"v1-{n}.tar"
        src.write_bytes(random_v1_archive(seed + n, layers=1 + n % 3, files=2, max_file_size=300, outer=outer).data)
        dst = work / f"v2-{n}.tar"
        upgrade_archive(src, dst, tags=[f"fuzz/base:{n}"])
        bases.append(dst.read_bytes())
    return bases


def phase_v2(count: int, seed: int) -> Outcome:
    """Mutated current-format archives through read_archive."""
    rng = random.Random(seed)
    refused: Counter[str] = Counter()
    accepted, failures = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bases = _v2_bases(seed, work)
        src = work / "case.tar"
        for _ in range(count):
            src.write_bytes(mutate(rng.choice(bases), rng, edits=rng.randint(1, 4)))
            try:
                read_archive(src)
            except KeepdockerError as exc:
                refused[type(exc).__name__] += 1
            except Exception:
                failures.append(traceback.format_exc())
            else:
                accepted += 1
    return count, accepted, dict(refused), failures


def phase_attacks(count: int, seed: int) -> Outcome:
    """Mutated attack archives through upgrade_archive (fuzz_one also checks DST and leftovers)."""
    rng = random.Random(seed)
    bases = [build().data for name, build in sorted(ATTACKS.items()) if "bomb" not in name]
    refused: Counter[str] = Counter()
    accepted, failures = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(count):
            data = mutate(rng.choice(bases), rng, edits=rng.randint(1, 3))
            try:
                outcome = fuzz_one(data, Path(tmp))
            except Exception:
                failures.append(traceback.format_exc())
                continue
            if outcome is None:
                accepted += 1
            else:
                refused[outcome] += 1
    return count, accepted, dict(refused), failures


PHASES = {"v1": phase_v1, "v2": phase_v2, "attacks": phase_attacks}


def run_phase(name: str, count: int, seed: int, workers: int) -> tuple[Outcome, float]:
    """Split ``count`` cases over ``workers`` processes (seeds seed, seed+1000, ...); merge the outcomes."""
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(PHASES[name], shares, [seed + 1000 * i for i in range(workers)]))
    seconds = time.perf_counter() - start
    refused: Counter[str] = Counter()
    for part in parts:
        refused.update(part[2])
    merged = (
        sum(p[0] for p in parts),
        sum(p[1] for p in parts),
        dict(refused),
        [tb for p in parts for tb in p[3]],
    )
    return merged, seconds


def main() -> int:
    """Run the phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="v1 cases (run_fuzz), default 10000")
    parser.add_argument("--v2-cases", type=int, default=5_000, help="current-format cases, default 5000")
    parser.add_argument("--attack-cases", type=int, default=2_000, help="mutated attack cases, default 2000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    total_failures = 0
    total_cases = 0
    total_seconds = 0.0
    for name, count in (("v1", args.cases), ("v2", args.v2_cases), ("attacks", args.attack_cases)):
        if count <= 0:
            continue
        (cases, accepted, refused, failures), seconds = run_phase(name, count, args.seed, args.workers)
        total_failures += len(failures)
        total_cases += cases
        total_seconds += seconds
        refusals = ", ".join(f"{k}={v}" for k, v in sorted(refused.items()))
        print(
            f"{name:8} cases={cases} accepted={accepted} refused={sum(refused.values())} ({refusals}) "
            f"failures={len(failures)} seconds={seconds:.1f} cases/s={cases / seconds:.0f}"
        )
        for tb in failures[:3]:
            print(f"--- failure in {name}:\n{tb}")
    print(
        f"total    cases={total_cases} failures={total_failures} seconds={total_seconds:.1f} "
        f"workers={args.workers} seed={args.seed}"
    )
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
