"""`keepdocker history IMAGE`: print the image's run history recorded by the push and migrate flows."""

from __future__ import annotations

import argparse
from typing import Any

from cli.commands._flowrun import prepare_prefect


def add_parser(sub: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "history", help="show an image's run history", description="Show the runs that pushed or migrated an image."
    )
    p.add_argument("image", help="repo:tag or image ID, as the runs named it")
    p.add_argument("--limit", type=int, default=50, help="newest N runs (default 50)")
    p.set_defaults(func=run)


def print_history(image: str, limit: int = 50) -> bool:
    """Print the image's rows newest first; False when it has none."""
    from tasks.history import HISTORY_COLUMNS, canonical_image_name, read_history

    rows = read_history(image, limit=limit)
    if not rows:
        print(f"no history for {canonical_image_name(image)}")
        return False
    widths = {"time": 20, "action": 8, "outcome": 10, "image_id": 19, "collection": 27, "pdh": 42, "bytes": 10}
    cols = [c for c in HISTORY_COLUMNS if c in widths] + ["seconds", "flow_run"]
    print("  ".join(c.upper().ljust(widths.get(c, 8)) for c in cols))
    for row in rows:
        print("  ".join(str(row.get(c, ""))[: widths.get(c, 200)].ljust(widths.get(c, 8)) for c in cols))
    return True


def run(args: argparse.Namespace) -> int:
    """Print the image's history; exit 1 when it has none."""
    prepare_prefect()
    return 0 if print_history(args.image, args.limit) else 1
