"""The engine strategy for v1 archives: legacy `docker load` into a Docker <= 28 engine, then `docker save`.

It is the cross-check of the native converter (and the way Arvados once migrated). Docker >= 1.13 refuses v1
archives without a `repositories` file, which is how `docker save <id>` on Docker <= 1.9 wrote them, so the
archive is re-streamed with a `repositories` file naming the requested v1 image under a temporary tag.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tarfile
from pathlib import Path

from keepdocker.engine import DockerEngine, SavedArchive
from keepdocker.errors import EngineError, ImageNotFoundError, MalformedArchiveError

_log = logging.getLogger(__name__)

__all__ = ["upgrade_with_engine"]


def _with_repositories(src: Path, dst: Path, v1_id: str, repo: str, tag: str) -> None:
    """Copy the v1 archive ``src`` (any compression) to ``dst`` with `repositories` = {repo: {tag: v1_id}}."""
    try:
        with tarfile.open(src, mode="r|*") as tin, tarfile.open(dst, mode="w", format=tarfile.PAX_FORMAT) as tout:
            for member in tin:
                if member.name.strip("./") == "repositories":
                    continue
                data = tin.extractfile(member) if member.isfile() else None
                tout.addfile(member, data)
            body = json.dumps({repo: {tag: v1_id}}).encode() + b"\n"
            info = tarfile.TarInfo("repositories")
            info.size = len(body)
            info.mode = 0o644
            tout.addfile(info, io.BytesIO(body))
    except (tarfile.TarError, EOFError) as exc:
        raise MalformedArchiveError(f"{src}: not a readable tar archive ({exc})") from exc


def upgrade_with_engine(engine: DockerEngine, src: Path, dst: Path, v1_id: str) -> SavedArchive:
    """Legacy-load ``src`` into ``engine`` and save the image built for ``v1_id`` to ``dst`` (a v2 archive)."""
    engine.require_legacy_load()
    repo, tag = "keepdocker-migrate", v1_id[:32]
    staged = dst.with_name(f".{dst.name}.v1-staged")
    try:
        _with_repositories(src, staged, v1_id, repo, tag)
        engine.load(staged)
        image_id = str(engine.inspect(f"{repo}:{tag}").get("Id", ""))
        if not image_id.startswith("sha256:"):
            raise EngineError(f"the engine at {engine.host} loaded {src} but reports no image ID for {v1_id}")
        return engine.save([image_id], dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        try:
            engine.untag(f"{repo}:{tag}")
        except ImageNotFoundError:
            pass  # the load failed before the tag existed
        except EngineError as exc:  # the conversion's outcome stands; a leftover tag is only clutter
            _log.warning("could not remove the temporary tag %s:%s: %s", repo, tag, exc.message)
