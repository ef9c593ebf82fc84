"""`keepdocker upgrade SRC DST`: convert a v1 image archive into a deterministic Docker 1.10-24 archive, no engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from keepdocker.images.upgrade import upgrade

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the `upgrade` subcommand."""
    parser = subparsers.add_parser(
        "upgrade",
        help="convert a v1 (docker save <= 1.9) archive into a current archive, without an engine",
        description=(
            "Convert a v1 image archive (plain, gzip, bzip2 or xz) into DST, a Docker 1.10-24 archive with the image "
            "IDs Docker's legacy load gives. Prints one line per manifest entry: the image ID, then its tags. "
            "A current archive given as SRC is copied unchanged. On error DST is not created."
        ),
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="the v1 archive to read")
    parser.add_argument("dst", type=Path, metavar="DST", help="the archive to write (replaced atomically)")
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="REPO:TAG",
        help="tag the image (the single leaf, or --image); may be repeated",
    )
    parser.add_argument("--image", metavar="V1ID", help="the v1 layer ID of the image to export and tag")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the upgrade and print the manifest entries; errors propagate to the CLI shim."""
    result = upgrade(args.src, args.dst, args.tag, args.image)
    for warning in result.warnings:
        print(f"keepdocker upgrade: warning: {warning}", file=sys.stderr)
    if result.already_current:
        print(f"keepdocker upgrade: {args.src} is already a current archive; copied unchanged", file=sys.stderr)
    for entry in result.entries:
        print(" ".join([entry.id, *entry.tags]))
    return 0
