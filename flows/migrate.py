"""Flow migrate-images: bring every v1 image in a cluster to v2, one independent image at a time, re-runnably."""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.logging import get_run_logger
from pydantic import BaseModel

from flows.params import (
    Concurrency,
    CredentialsBlock,
    DryRun,
    FanOut,
    Limit,
    MigrateProject,
    OldPdh,
    OldPdhs,
    StrategyChoice,
    Verify,
    optional,
)
from flows.states import completed, failed
from keepdocker.arv.migration import V1Image
from keepdocker.arv.push import UploadRequest
from keepdocker.errors import KeepdockerError, PartialFailureError
from keepdocker.requests import MigrateImageRequest, MigrateRequest
from tasks.discover import discover_v1
from tasks.download import download
from tasks.history import history_row, record_history
from tasks.inplace import migrate_in_place
from tasks.link import link_migration
from tasks.load import verify_collection
from tasks.results import remove_quietly
from tasks.upgrade import upgrade, upgrade_with_engine
from tasks.upload import upload

__all__ = ["FANOUT_DEPLOYMENT", "ImageOutcome", "MigrationReport", "migrate_image", "migrate_images"]

# The deployment a fanned-out sweep starts once per image (see deployments/prefect.yaml).
FANOUT_DEPLOYMENT = "migrate-image/fanout"
# The progress artifact is updated at most this often (and when the last image finishes).
PROGRESS_SECONDS = 1.0


class ImageOutcome(BaseModel):
    """What happened to one v1 image in a sweep (or, in a dry run, what would happen)."""

    image: str
    old_pdh: str
    v1_id: str
    owner_uuid: str
    new_pdh: str = ""
    new_id: str = ""
    collection: str = ""
    outcome: Literal["planned", "migrated", "failed"] = "planned"
    action: str = ""  # in place | uploaded | copied | present (or the fanned-out flow run)
    path: str = ""  # in place | whole file: <why> | engine: download path
    bytes_reused: int = 0  # bytes of the v2 tar that are the old collection's Keep blocks
    bytes_written: int = 0  # bytes put into Keep for this image
    links_created: int = 0
    error: str = ""
    bytes: int = 0  # the v1 image's size (what the sweep downloads)
    v2_bytes: int = 0  # the v2 image tar's size in Keep
    seconds: float = 0.0


class MigrationReport(BaseModel):
    """A sweep's result: every image's outcome, and totals."""

    dry_run: bool
    images: list[ImageOutcome]

    @property
    def failed(self) -> list[ImageOutcome]:
        """The images that failed."""
        return [i for i in self.images if i.outcome == "failed"]

    @property
    def total_bytes(self) -> int:
        """Bytes of the old images covered by the sweep."""
        return sum(i.bytes for i in self.images)

    def table(self) -> list[dict[str, Any]]:
        """The summary rows, outcome first and the reason of a failure last (so nothing needs scrolling to)."""
        return [
            {
                "outcome": i.outcome,
                "image": i.image,
                "old_pdh": i.old_pdh,
                "new_pdh": i.new_pdh,
                "new_id": i.new_id,
                "v1_bytes": i.bytes,
                "v2_bytes": i.v2_bytes,
                "bytes_reused": i.bytes_reused,
                "bytes_written": i.bytes_written,
                "path": i.path,
                "seconds": round(i.seconds, 2),
                "reason": i.error,
            }
            for i in self.images
        ]


def image_label(image: V1Image) -> str:
    """The name an image's history is filed under: its first repo:tag, else its v1 ID."""
    tags = image.repo_tags
    return tags[0] if tags else image.v1_id


def _outcome(image: V1Image) -> ImageOutcome:
    return ImageOutcome(
        image=image_label(image), old_pdh=image.pdh, v1_id=image.v1_id, owner_uuid=image.owner_uuid, bytes=image.size
    )


class _Placed(BaseModel):
    """Where the v2 image now lives, how it got there, and the Keep bytes it shares and added."""

    image_id: str
    uuid: str
    pdh: str
    size: int
    action: str
    path: str
    bytes_reused: int = 0
    bytes_written: int = 0


def _place(image: V1Image, request: MigrateRequest) -> _Placed:
    """The v2 collection: in place over the old blocks (native, when sharing pays), else through a local v2 tar."""
    creds = request.credentials_block
    why = "engine: download path (legacy load and save need the whole tar on local disk)"
    if request.strategy == "native":
        moved = migrate_in_place(image.pdh, image.repo_tags, image.v1_id, image.owner_uuid, creds)
        if not moved.fallback:
            return _Placed(
                image_id=moved.image_id, uuid=moved.uuid, pdh=moved.pdh, size=moved.size, action=moved.action,
                path="in place", bytes_reused=moved.reused_bytes, bytes_written=moved.written_bytes,
            )
        why = f"whole file: {moved.fallback}"
    source = download(image.pdh, creds)
    if request.strategy == "engine":
        v2 = upgrade_with_engine(source.path, source.sha256, image.repo_tags, image.v1_id)
    else:
        v2 = upgrade(source.path, source.sha256, image.repo_tags, image.v1_id)
    first_tag = image.repo_tags[0] if image.repo_tags else None
    placed = upload(
        UploadRequest(image_id=v2.image_id, owner_uuid=image.owner_uuid, repo_tag=first_tag, tar=Path(v2.path)), creds
    )
    remove_quietly(source.path, v2.path)
    return _Placed(
        image_id=v2.image_id, uuid=placed.uuid, pdh=placed.pdh, size=placed.size, action=placed.action, path=why,
        bytes_written=v2.size if placed.action == "uploaded" else 0,
    )


def migrate_one(
    image: V1Image, request: MigrateRequest, history: Callable[[Callable[[], None]], object] | None = None
) -> ImageOutcome:
    """Place (in place over the old Keep blocks, else download, upgrade, upload), (verify what Keep serves,) and
    link one image; a failure is reported for it alone. ``history`` runs the history write (default: at once)."""
    result = _outcome(image)
    started = time.monotonic()
    creds = request.credentials_block
    try:
        placed = _place(image, request)
        if request.verify:  # what Arvados now serves must load as the new ID before anything points at it
            verify_collection(placed.pdh, placed.image_id, creds)
        links = link_migration(image, placed.image_id, placed.uuid, placed.pdh, creds)
        result = result.model_copy(
            update={
                "new_pdh": placed.pdh,
                "new_id": placed.image_id,
                "collection": placed.uuid,
                "outcome": "migrated",
                "action": placed.action,
                "links_created": links,
                "v2_bytes": placed.size,
                "path": placed.path,
                "bytes_reused": placed.bytes_reused,
                "bytes_written": placed.bytes_written,
            }
        )
    except KeepdockerError as exc:
        result = result.model_copy(update={"outcome": "failed", "error": exc.message})
    except Exception as exc:  # a bug, not the image: it still fails alone, and the traceback goes to the run's log
        get_run_logger().exception("migrating %s failed unexpectedly", image.pdh)
        result = result.model_copy(update={"outcome": "failed", "error": f"{type(exc).__name__}: {exc}"})
    result = result.model_copy(update={"seconds": time.monotonic() - started})
    # Filed under every tag of the image and both IDs, so any name the user knows finds the migration.
    row = history_row(
        "migrate",
        "failed" if result.outcome == "failed" else "migrated",
        ", ".join(image.repo_tags) or image.v1_id,
        reason=result.error,
        image_id=result.new_id,
        v1_id=image.v1_id,
        collection=result.collection,
        pdh=result.new_pdh,
        size=result.v2_bytes,
        seconds=result.seconds,
        reused=result.bytes_reused,
        written=result.bytes_written,
    )
    write = functools.partial(record_history, image.repo_tags, row)
    if history is None:
        write()
    else:
        history(write)
    return result


def run_fanned_out(image: V1Image, request: MigrateRequest) -> ImageOutcome:
    """Migrate one image as its own flow run of the fan-out deployment (any worker on the pool may take it)."""
    started = time.monotonic()
    parameters = {
        "pdh": image.pdh,
        "strategy": request.strategy,
        "verify": request.verify,
        "credentials_block": request.credentials_block or "",
    }
    run = cast(FlowRun, run_deployment(FANOUT_DEPLOYMENT, parameters=parameters, timeout=None))
    state = run.state
    result = _outcome(image).model_copy(update={"seconds": time.monotonic() - started})
    if state is not None and state.is_completed():
        return result.model_copy(update={"outcome": "migrated", "action": f"flow run {run.name}"})
    reason = state.message if state is not None else "no state"
    return result.model_copy(update={"outcome": "failed", "error": f"flow run {run.name}: {reason}"})


@flow(name="migrate-image")
def migrate_image(
    pdh: OldPdh,
    strategy: StrategyChoice = "native",
    verify: Verify = False,
    credentials_block: CredentialsBlock = "",
) -> ImageOutcome | None:
    """Migrate the v1 image with this PDH (None when already migrated); the state message says what happened."""
    try:
        request = MigrateImageRequest(
            pdh=pdh, strategy=strategy, verify=verify, credentials_block=optional(credentials_block)
        )
        outcome = migrate_pdh(request)
    except KeepdockerError as exc:
        return failed(exc, ImageOutcome)
    if outcome is None:
        return completed(None, f"{pdh}: nothing to do (already migrated, or not a readable v1 image)")
    return completed(outcome, f"{outcome.image} ({pdh}) migrated: {outcome.collection} ({outcome.new_pdh})")


def migrate_pdh(request: MigrateImageRequest) -> ImageOutcome | None:
    """Migrate one image by PDH; raises PartialFailureError with its outcome when it fails."""
    found = discover_v1(pdhs=[request.pdh], credentials_block=request.credentials_block)
    if not found:
        get_run_logger().info("%s: nothing to do (already migrated, or not a readable v1 image)", request.pdh)
        return None
    sweep = MigrateRequest(
        strategy=request.strategy, verify=request.verify, credentials_block=request.credentials_block
    )
    outcome = migrate_one(found[0], sweep)
    if outcome.outcome == "failed":
        raise PartialFailureError(f"{outcome.image} ({outcome.old_pdh}): {outcome.error}", outcome)
    return outcome


def _plan_table(images: list[V1Image]) -> list[dict[str, Any]]:
    return [
        {
            "image": image_label(i),
            "old_pdh": i.pdh,
            "owner": i.owner_uuid,
            "bytes": i.size,
            "would_create": f"1 collection, {len(i.links)} image link(s), 1 migration link",
        }
        for i in images
    ]


@flow(name="migrate-images", log_prints=False)
def migrate_images(
    dry_run: DryRun = False,
    project_uuid: MigrateProject = "",
    pdhs: OldPdhs = (),
    limit: Limit = 0,
    concurrency: Concurrency = 2,
    strategy: StrategyChoice = "native",
    verify: Verify = False,
    fan_out: FanOut = False,
    credentials_block: CredentialsBlock = "",
) -> MigrationReport:
    """Migrate every v1 image in scope; the state message counts the outcomes, or names the failed images."""
    try:
        request = MigrateRequest(
            dry_run=dry_run,
            project_uuid=optional(project_uuid),
            pdhs=tuple(pdhs),
            limit=limit or None,
            concurrency=concurrency,
            strategy=strategy,
            verify=verify,
            fan_out=fan_out,
            credentials_block=optional(credentials_block),
        )
        report = sweep(request)
    except KeepdockerError as exc:
        return failed(exc, MigrationReport)
    if report.dry_run:
        return completed(
            report, f"dry run: {len(report.images)} image(s), {report.total_bytes} bytes would be migrated"
        )
    return completed(report, f"{len(report.images)} image(s) migrated, 0 failed")


def sweep(request: MigrateRequest) -> MigrationReport:
    """Migrate every v1 image in scope; raises PartialFailureError (after finishing the others) when any failed."""
    logger = get_run_logger()
    images = discover_v1(request.project_uuid, list(request.pdhs) or None, request.limit, request.credentials_block)
    if request.dry_run:
        report = MigrationReport(dry_run=True, images=[_outcome(i) for i in images])
        create_table_artifact(
            table=_plan_table(images) or [{"image": "(nothing to migrate)"}],
            key="migrate-images-plan",
            description=f"Dry run: {len(images)} image(s), {report.total_bytes} bytes",
        )
        logger.info("dry run: %d image(s), %d bytes would be migrated", len(images), report.total_bytes)
        return report

    total = len(images)
    progress = cast(
        UUID,
        create_progress_artifact(0.0, key="migrate-images-progress", description=f"0 of {total} images finished"),
    )
    outcomes: list[ImageOutcome] = []
    # Each image's history rows (an API round trip per key) are written by their own threads while the next image
    # is migrated; all are written before the summary.
    written: list[Future[None]] = []

    def write_later(write: Callable[[], None]) -> None:
        written.append(history_pool.submit(contextvars.copy_context().run, write))

    def one(image: V1Image, request: MigrateRequest) -> ImageOutcome:
        return run_fanned_out(image, request) if request.fan_out else migrate_one(image, request, write_later)

    # A plain thread pool, not Prefect's task runner: the unit of concurrency is one image's whole sequence of task
    # calls (in place, or download, upgrade, upload; then verify, link), which fails alone and moves the progress
    # artifact as it ends; .submit()/.map() would fan out single tasks instead. Across workers, fan_out runs each
    # image as its own migrate-image flow run (run_fanned_out), and these threads only wait for those runs.
    with (
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="history") as history_pool,
        ThreadPoolExecutor(max_workers=request.concurrency, thread_name_prefix="migrate") as pool,
    ):
        futures: list[Future[ImageOutcome]] = [
            pool.submit(contextvars.copy_context().run, one, image, request) for image in images
        ]
        shown = time.monotonic()
        for fut in as_completed(futures):
            outcomes.append(fut.result())
            n_failed = sum(o.outcome == "failed" for o in outcomes)
            # One API round trip per update: at most one a PROGRESS_SECONDS while images finish fast, and always
            # the last one, so the artifact ends at every image.
            if len(outcomes) == total or time.monotonic() - shown >= PROGRESS_SECONDS:
                update_progress_artifact(
                    progress,
                    100.0 * len(outcomes) / max(total, 1),
                    description=f"{len(outcomes)} of {total} images finished ({n_failed} failed)",
                )
                shown = time.monotonic()
            logger.info("%d of %d images finished (%d failed)", len(outcomes), total, n_failed)
        pool.shutdown()
        for w in written:  # an unexpected failure to write history fails the sweep, as it did when written in line
            w.result()
    order = {i.pdh: n for n, i in enumerate(images)}
    outcomes.sort(key=lambda o: order[o.old_pdh])
    report = MigrationReport(dry_run=False, images=outcomes)
    create_table_artifact(
        table=report.table() or [{"image": "(nothing to migrate)"}],
        key="migrate-images-summary",
        description=f"{len(outcomes) - len(report.failed)} migrated, {len(report.failed)} failed",
    )
    if report.failed:
        names = ", ".join(f"{o.image} ({o.error})" for o in report.failed[:5])
        raise PartialFailureError(f"{len(report.failed)} of {len(outcomes)} image(s) failed: {names}", report)
    logger.info("migrated %d image(s)", len(outcomes))
    return report
