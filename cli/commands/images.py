"""`keepdocker images [IMAGE [TAG]]`: the same table as `arv-keepdocker images`."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "images", help="list Docker images in Arvados", description="List Docker images stored in Arvados."
    )
    p.add_argument("image", nargs="?", help="repository or image ID prefix")
    p.add_argument("tag", nargs="?", help="tag (default latest)")
    p.add_argument("--project-uuid", help="only images in this project")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print REPOSITORY, TAG, IMAGE ID, COLLECTION, CREATED rows, most preferred first."""
    from keepdocker.arv.catalog import list_images  # the SDK loads slowly: only for this command
    from keepdocker.arv.client import connect

    rows = list_images(connect(), args.image, args.tag, args.project_uuid)
    fmt = "{:30}  {:10}  {:12}  {:29}  {:20}"
    print(fmt.format("REPOSITORY", "TAG", "IMAGE ID", "COLLECTION", "CREATED"))
    for r in rows:
        print(fmt.format(r.repo, r.tag, r.image_id[:12], r.collection_uuid, r.timestamp.strftime("%c")))
    return 0
