"""Benchmark: discover_v1_images over many v1 images seeded into a stand-in the way an old cluster stored them.

Run: ``uv run python benchmarks/bench_discover.py [--images 10000] [--migrated 0]``. Seeds the images straight into
a stopped stand-in's record store (one collection holding ``<v1 id>.tar``, one docker_image_hash link and one
docker_image_repo+tag link each, in two owners; ``--migrated`` of them also get a system-owned migration link), then
starts the stand-in and times ``keepdocker.arv.migration.discover_v1_images`` over the real SDK. Prints seeding and
discovery seconds, images per second, the API requests discovery made (from ``/_standin/stats``) and the target
(< 30 s for 10,000 images).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_push

from keepdocker.arv.client import ArvadosConfig, connect
from keepdocker.arv.migration import MIGRATION_LINK, MIGRATION_LINK_NAME, discover_v1_images
from keepdocker.standin.manifest import portable_data_hash
from keepdocker.standin.server import DataDir

TARGET_SECONDS = 30.0


def seed_store(root: Path, images: int, migrated: int, seed: int = 0) -> tuple[int, float]:
    """Seed ``images`` v1 images into the stopped stand-in at ``root``; return (images to discover, seconds)."""
    started = time.perf_counter()
    layout = DataDir(root)
    store = layout.open_store()
    try:
        blocks = layout.open_blocks()
        admin = store.authenticate(store.token("admin"))
        user = store.authenticate(store.token("user"))
        assert admin is not None and user is not None
        owners = [admin.user_uuid, user.user_uuid]
        content = b"v1 image stand-in bytes\n"
        md5 = blocks.put_bytes(content)
        rng = random.Random(seed)
        # One transaction per record is what the API does; the store is local, so this stays in seconds.
        for i in range(images):
            v1_id = rng.randbytes(32).hex()
            owner = owners[i % 2]
            manifest = f". {md5}+{len(content)} 0:{len(content)}:{v1_id}.tar\n"
            coll = store.create_collection(
                admin,
                {"owner_uuid": owner, "name": f"Docker image bench/img{i}:v1 {v1_id[:12]}", "manifest_text": manifest},
            )
            props = {"image_timestamp": (dt.datetime(2015, 1, 1) + dt.timedelta(seconds=i)).isoformat() + "Z"}
            store.create_link(
                admin,
                {"owner_uuid": owner, "link_class": "docker_image_hash", "name": v1_id, "head_uuid": coll,
                 "properties": props},
            )
            store.create_link(
                admin,
                {"owner_uuid": owner, "link_class": "docker_image_repo+tag", "name": f"bench/img{i}:v1",
                 "head_uuid": coll, "properties": props},
            )
            if i < migrated:
                # The tail is the old PDH; the head need not exist for discovery to skip the image.
                store.create_link(
                    admin,
                    {"owner_uuid": store.system_user_uuid, "link_class": MIGRATION_LINK,
                     "name": MIGRATION_LINK_NAME, "tail_uuid": portable_data_hash(manifest),
                     "head_uuid": f"{'0' * 32}+{i}"},
                )
    finally:
        store.close()
    return images - migrated, time.perf_counter() - started


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000, help="v1 images to seed (default 10000)")
    parser.add_argument("--migrated", type=int, default=0, help="how many of them already have a migration link")
    parser.add_argument("--runs", type=int, default=2, help="discovery runs (each timed; the first is cold)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-discover-", dir="/tmp") as tmp:
        root = Path(tmp) / "standin"
        expected, seed_seconds = seed_store(root, args.images, args.migrated)
        print(f"seeded {args.images} v1 images ({args.migrated} already migrated) in {seed_seconds:.1f} s")
        with bench_push.bench_standin(root) as standin:
            session = connect(ArvadosConfig.from_env(standin.client_env({})))
            times: list[float] = []
            for run in range(args.runs):
                before = standin.stats()["requests"]
                started = time.perf_counter()
                found = discover_v1_images(session)
                elapsed = time.perf_counter() - started
                after = standin.stats()["requests"]
                times.append(elapsed)
                calls = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
                calls = {k: v for k, v in calls.items() if "_standin" not in k and "stats" not in k}
                total = sum(calls.values())
                if len(found) != expected:
                    raise SystemExit(f"discover found {len(found)} images, expected {expected}")
                print(
                    f"run {run + 1}: discover_v1_images found {len(found)} images in {elapsed:.2f} s "
                    f"({len(found) / elapsed:,.0f} images/s), {total} API requests: {calls}"
                )
        best = min(times)
        verdict = "met" if max(times) < TARGET_SECONDS else "MISSED"
        print(f"discover: {times[0]:.2f} s cold, {best:.2f} s best; target < {TARGET_SECONDS:.0f} s: {verdict}")

    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
