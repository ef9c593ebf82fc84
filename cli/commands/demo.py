"""`keepdocker demo`: the whole migrate job on the local default, with no cluster and no Docker engine.

It starts a stand-in under the user's data directory, seeds it once with generated v1 images stored the way an old
cluster stored them (no `repositories` file in some, several owners), runs a real migrate sweep on Prefect's
ephemeral API, and prints the summary and each image's history.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cli.commands._flowrun import prepare_prefect, run_flow

# (seed, repo:tag names, owned by the demo project?, repositories file in the tar?)
DEMO_IMAGES: tuple[tuple[int, tuple[str, ...], bool, bool], ...] = (
    (101, ("demo/base:2015",), False, False),
    (102, ("demo/app:1.0", "demo/app:latest"), True, False),
    (103, (), True, True),
)


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/keepdocker/demo, else ~/.local/share/keepdocker/demo."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "keepdocker" / "demo"


def add_parser(sub: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="migrate generated v1 images in a local stand-in",
        description="Run the migrate job end to end against a local Arvados stand-in (no cluster, no engine).",
    )
    p.add_argument("--data-dir", type=Path, default=None, help="where the stand-in keeps its data")
    p.add_argument("--fresh", action="store_true", help="start from an empty stand-in (re-seed)")
    p.set_defaults(func=run)


def seed(data_dir: Path) -> None:
    """Upload the demo's v1 images once, like an old cluster stored them."""
    from keepdocker.arv.client import connect
    from keepdocker.testing.oldcluster import seed_v1_image
    from keepdocker.testing.v1archives import random_v1_archive

    session = connect()
    project = (
        session.api.groups()
        .create(body={"group_class": "project", "name": "Docker images from 2015"}, ensure_unique_name=True)
        .execute()
    )
    with tempfile.TemporaryDirectory(prefix="keepdocker-demo-") as tmp:
        for seed_no, names, in_project, repositories in DEMO_IMAGES:
            # Uncompressed layers of a few MiB, as `docker save` <= 1.9 wrote them: big enough for the sweep to
            # migrate them in place (the new collections reuse the old blocks; the summary shows the bytes).
            generated = random_v1_archive(
                seed_no,
                layers=3,
                repositories=repositories,
                symlinks=False,
                compressions=("none",),
                max_file_size=1 << 20,
            )
            path = generated.write(Path(tmp) / f"{seed_no}.tar")
            owner = project["uuid"] if in_project else None
            image = seed_v1_image(session, path, generated.leaves[0], names, owner)
            print(f"seeded v1 image {image.v1_id[:12]} {' '.join(names) or '(untagged)'} -> {image.collection.uuid}")
    (data_dir / "seeded").write_text("done\n")


def run(args: argparse.Namespace) -> int:
    """Start the stand-in, seed it once, run the sweep, print summary and histories; stop the stand-in."""
    prepare_prefect()
    from cli.commands.history import print_history
    from cli.commands.migrate import print_report
    from flows.migrate import migrate_images
    from keepdocker.requests import MigrateRequest
    from keepdocker.testing.standin import running_standin

    data_dir: Path = args.data_dir or default_data_dir()
    if args.fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with running_standin(data_dir / "standin") as standin:
        os.environ.update({k: v for k, v in standin.env.items() if k.startswith("ARVADOS_")})
        print(f"stand-in Arvados at https://{standin.env['ARVADOS_API_HOST']} (data in {data_dir})")
        if not (data_dir / "seeded").exists():
            seed(data_dir)
        ok, result = run_flow(migrate_images, MigrateRequest(concurrency=2))
        report = result.report if not ok else result
        print()
        print_report(report)
        names = [i.image for i in report.images] if report is not None and report.images else []
        if not names:
            print("(the demo images were migrated by an earlier run; `keepdocker demo --fresh` starts over)")
            names = sorted({n for _, tags, _, _ in DEMO_IMAGES for n in tags[:1]})
        for name in names:
            print(f"\nhistory of {name}:")
            print_history(name, limit=5)
    if not ok:
        raise result
    return 0
