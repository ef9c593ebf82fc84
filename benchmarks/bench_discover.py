"""Benchmark: discover_v1_images over many v1 images seeded into a stand-in the way an old cluster stored them.

Run: ``uv run python benchmarks/bench_discover.py [--images 10000] [--migrated 0]``. Seeds the images straight into
a stopped stand-in's record store (one collection holding ``<v1 id>.tar``, one docker_image_hash link and one
docker_image_repo+tag link each, in two owners; ``--migrated`` of them also get a system-owned migration link), then
starts the stand-in and times ``keepdocker.arv.migration.discover_v1_images`` over the real SDK. Prints seeding and
discovery seconds, images per second, the API requests discovery made and the records it listed (from
``/_standin/stats``) and the target (< 30 s for 10,000 images). Then ``--fanout`` images (default 200) are discovered
one PDH at a time, as each run of a fanned-out sweep does, and their total requests and records are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_push

from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.arv.migration import discover_v1_images, require_admin
from keepdocker.testing.oldcluster import seed_v1_records
from keepdocker.testing.standin import RunningStandin

TARGET_SECONDS = 30.0


def requests_and_records(standin: RunningStandin) -> tuple[dict[str, int], int]:
    """API requests by kind (the stats endpoint's own excluded) and records returned by list calls, so far."""
    counts = standin.stats()["requests"]
    calls = {k: v for k, v in counts.items() if k.startswith("api ") and "_standin" not in k}
    return calls, sum(v for k, v in counts.items() if k.startswith("listed "))


def fan_out(standin: RunningStandin, session: ArvadosSession, pdhs: list[str]) -> tuple[int, int, float]:
    """What a fanned-out sweep's discovery costs: per image, the discover task's calls for that one PDH.

    Measured in process (one session, as a worker process reuses it), not as separate flow runs.
    """
    calls_before, listed_before = requests_and_records(standin)
    started = time.perf_counter()
    for pdh in pdhs:
        require_admin(session)
        if [i.pdh for i in discover_v1_images(session, pdhs=[pdh])] != [pdh]:
            raise SystemExit(f"discover_v1_images(pdhs=[{pdh}]) did not find that image")
    elapsed = time.perf_counter() - started
    calls_after, listed_after = requests_and_records(standin)
    requests = sum(calls_after.values()) - sum(calls_before.values())
    return requests, listed_after - listed_before, elapsed


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000, help="v1 images to seed (default 10000)")
    parser.add_argument("--migrated", type=int, default=0, help="how many of them already have a migration link")
    parser.add_argument("--runs", type=int, default=2, help="discovery runs (each timed; the first is cold)")
    parser.add_argument("--fanout", type=int, default=200, help="images discovered one PDH at a time (default 200)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-discover-", dir="/tmp") as tmp:
        root = Path(tmp) / "standin"
        started = time.perf_counter()
        todo = seed_v1_records(root, args.images, args.migrated)
        expected, seed_seconds = len(todo), time.perf_counter() - started
        print(f"seeded {args.images} v1 images ({args.migrated} already migrated) in {seed_seconds:.1f} s")
        with bench_push.bench_standin(root) as standin:
            session = connect(ArvadosConfig.from_env(standin.client_env({})))
            times: list[float] = []
            for run in range(args.runs):
                before, listed_before = requests_and_records(standin)
                started = time.perf_counter()
                found = discover_v1_images(session)
                elapsed = time.perf_counter() - started
                after, listed_after = requests_and_records(standin)
                times.append(elapsed)
                calls = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
                total, listed = sum(calls.values()), listed_after - listed_before
                if len(found) != expected:
                    raise SystemExit(f"discover found {len(found)} images, expected {expected}")
                print(
                    f"run {run + 1}: discover_v1_images found {len(found)} images in {elapsed:.2f} s "
                    f"({len(found) / elapsed:,.0f} images/s), {total} API requests, {listed} records listed: {calls}"
                )
            sample = todo[: args.fanout]
            if sample:
                requests, records, seconds = fan_out(standin, session, sample)
                n = len(sample)
                print(
                    f"fan-out discovery of {n} images (in process, one discover call per PDH, as each fanned-out "
                    f"run makes): {requests} API requests ({requests / n:.1f} per image), {records} records listed "
                    f"({records / n:.1f} per image), {seconds:.2f} s; a cluster-wide listing per image would be "
                    f"{total} requests and {listed} records each, {n * total} requests in all"
                )
        best = min(times)
        verdict = "met" if max(times) < TARGET_SECONDS else "MISSED"
        print(f"discover: {times[0]:.2f} s cold, {best:.2f} s best; target < {TARGET_SECONDS:.0f} s: {verdict}")

    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
