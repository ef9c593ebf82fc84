"""`keepdocker history IMAGE [TAG]`: print the runs that pushed or migrated an image, newest first, untruncated."""

from __future__ import annotations

import argparse
from typing import Any

from cli.commands._flowrun import prepare_prefect


def add_parser(sub: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "history",
        help="show an image's run history",
        description="Show the runs that pushed or migrated an image: by repo[:tag], IMAGE TAG, image ID or ID prefix "
        "(a migration is found by every tag, the old v1 ID and the new ID). V2_BYTES is the size of the v2 image "
        "tar in Keep.",
    )
    p.add_argument("image", help="repo, repo:tag, image ID (v1 or sha256:) or an ID prefix")
    p.add_argument("tag", nargs="?", help="tag, when not part of IMAGE (default latest)")
    p.add_argument("--limit", type=int, default=50, help="newest N runs (default 50)")
    p.set_defaults(func=run)


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    """History rows as aligned text lines (header first); no value is cut, empty ones show as '-'."""
    from tasks.history import HISTORY_COLUMNS

    cols = [c for c in HISTORY_COLUMNS if c != "flow"]
    cells = [[str(row.get(c, "")) if row.get(c, "") not in ("", None) else "-" for c in cols] for row in rows]
    header = [c.upper() for c in cols]
    widths = [max(len(x) for x in column) for column in zip(header, *cells, strict=True)]
    lines = []
    for line in [header, *cells]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return lines


def print_history(image: str, tag: str | None = None, limit: int = 50) -> bool:
    """Print the image's rows newest first; False when it has none."""
    from tasks.history import canonical_image_name, read_history

    rows = read_history(image, tag, limit=limit)
    if not rows:
        print(f"no history for {canonical_image_name(image, tag)}")
        return False
    for line in format_table(rows):
        print(line)
    return True


def run(args: argparse.Namespace) -> int:
    """Print the image's history; exit 1 when it has none."""
    from keepdocker.references import parse_reference

    parse_reference(args.image, args.tag)  # a bad name or tag is a usage error, before Prefect starts
    prepare_prefect()
    return 0 if print_history(args.image, args.tag, args.limit) else 1
