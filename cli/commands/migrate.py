"""`keepdocker migrate`: run the migrate-images flow and print its summary; exit 1 when any image failed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.commands._flowrun import prepare_prefect, run_flow
from keepdocker.errors import PartialFailureError


def add_parser(sub: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "migrate", help="migrate v1 images in Arvados to v2", description="Migrate every v1 image in Arvados to v2."
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be migrated; write nothing")
    p.add_argument("--project-uuid", help="only images whose collection this project owns")
    p.add_argument("--pdh", action="append", default=[], dest="pdhs", metavar="PDH", help="only this old PDH")
    p.add_argument("--limit", type=int, help="migrate at most N images")
    p.add_argument("--concurrency", type=int, default=2, help="images migrated at once (default 2)")
    p.add_argument("--strategy", choices=("native", "engine"), default="native", help="converter (default native)")
    p.add_argument(
        "--verify", action="store_true", help="load each new collection, read from Keep, into Docker; check its ID"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr (errors are still printed)")
    p.set_defaults(func=run)


def print_report(report: Any, out: Any = sys.stdout) -> None:
    """The sweep summary as an aligned table, then a totals line."""
    rows = report.table()
    if not rows:
        print("nothing to migrate", file=out)
        return
    if report.dry_run:
        print(f"{'IMAGE':40}  {'OLD PDH':45}  {'BYTES':>12}", file=out)
        for i in report.images:
            print(f"{i.image[:40]:40}  {i.old_pdh:45}  {i.bytes:>12}", file=out)
        print(f"dry run: {len(report.images)} image(s), {report.total_bytes} bytes would be migrated", file=out)
        return
    print(f"{'IMAGE':32}  {'OLD PDH':42}  {'NEW PDH':42}  {'NEW ID':19}  {'SECONDS':>7}  OUTCOME", file=out)
    for r in rows:
        print(
            f"{r['image'][:32]:32}  {r['old_pdh']:42}  {r['new_pdh']:42}  {r['new_id'][:19]:19}  "
            f"{r['seconds']:>7}  {r['outcome']}{': ' + r['reason'] if r['reason'] else ''}",
            file=out,
        )
    failed = len(report.failed)
    reused = sum(i.bytes_reused for i in report.images)
    written = sum(i.bytes_written for i in report.images)
    print(
        f"{len(rows) - failed} migrated, {failed} failed, {report.total_bytes} bytes; Keep: {reused} bytes reused, "
        f"{written} written",
        file=out,
    )


def run(args: argparse.Namespace) -> int:
    """Validate the arguments, run the flow, print the summary."""
    from keepdocker.requests import MigrateRequest  # imported here: `keepdocker --help` stays fast

    request = MigrateRequest(
        dry_run=args.dry_run,
        project_uuid=args.project_uuid,
        pdhs=tuple(args.pdhs),
        limit=args.limit,
        concurrency=args.concurrency,
        strategy=args.strategy,
        verify=args.verify,
    )
    prepare_prefect()
    from flows.migrate import migrate_images

    ok, result = run_flow(migrate_images, request)
    if ok:
        print_report(result)
        return 0
    if isinstance(result, PartialFailureError) and result.report is not None:
        print_report(result.report)
    raise result
