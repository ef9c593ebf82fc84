"""Move one image tar between local disk and a Keep collection, streaming and hashing on the way."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import arvados.collection

from keepdocker.arv import staging
from keepdocker.arv.client import ArvadosSession, arvados_errors
from keepdocker.errors import ArvadosError, ArvadosPermissionError, CacheCorruptError, CacheFullError
from keepdocker.progress import Progress

__all__ = [
    "CollectionRef",
    "DownloadedTar",
    "Writable",
    "download_tar",
    "manifest_name",
    "single_tar",
    "stream_tar",
    "upload_tar",
]

CHUNK = 1 << 20


@dataclass(frozen=True)
class CollectionRef:
    """A collection written to Arvados: its UUID, portable data hash and the bytes it holds."""

    uuid: str
    pdh: str
    size: int
    staged: bool = False  # its blocks were put into Keep while the tar was saved (keepdocker.arv.staging)


@dataclass(frozen=True)
class DownloadedTar:
    """A tar fetched from Keep: the file name it had in the collection, its size and sha256."""

    filename: str
    size: int
    sha256: str


def upload_tar(
    session: ArvadosSession,
    path: Path,
    filename: str,
    *,
    name: str,
    owner_uuid: str | None,
    properties: dict[str, Any],
    progress: Progress | None = None,
    expected_sha256: str = "",
) -> CollectionRef:
    """Write ``path`` into a new collection as its single file ``filename``; the name is made unique if taken.

    With ``expected_sha256`` (recorded when the file was written), the bytes are hashed on the way and a mismatch
    raises CacheCorruptError before any collection is created: a damaged cache entry is never published.
    """
    total = path.stat().st_size
    staged = staging.take(session, expected_sha256, total) if expected_sha256 else None
    if staged is not None:  # its blocks were put into Keep while it was saved: only the collection is missing
        try:
            with arvados_errors("creating the collection of blocks stored while saving"):
                coll = arvados.collection.Collection(_staged_manifest(staged, filename), api_client=session.api)
                uuid, pdh = _save_new(coll, name, owner_uuid, properties)
        except ArvadosPermissionError:
            pass  # the staged signatures were refused (expired, or another token's): upload the file instead
        else:
            if progress:
                progress(total, total)
            return CollectionRef(uuid, pdh, total, staged=True)
    digest = hashlib.sha256() if expected_sha256 else None
    with arvados_errors(f"uploading {path.name} to Keep"):
        coll = arvados.collection.Collection(api_client=session.api, num_retries=4, put_threads=2)
        done = 0
        with path.open("rb") as src, coll.open(filename, "wb") as out:
            while chunk := src.read(CHUNK * 8):
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if digest is not None and digest.hexdigest() != expected_sha256:
            raise CacheCorruptError(
                f"{path} changed since it was saved (sha256 {digest.hexdigest()[:12]}, recorded "
                f"{expected_sha256[:12]}); nothing was published: retry to save it again"
            )
        uuid, pdh = _save_new(coll, name, owner_uuid, properties)
    return CollectionRef(uuid=uuid, pdh=pdh, size=total)


def _save_new(coll: Any, name: str, owner_uuid: str | None, properties: dict[str, Any]) -> tuple[str, str]:
    """Create ``coll`` in Arvados (the name made unique if taken); its UUID and PDH."""
    coll.save_new(name=name, owner_uuid=owner_uuid, properties=properties, ensure_unique_name=True, num_retries=4)
    uuid = coll.manifest_locator()
    if not uuid:
        raise ArvadosError(f"creating the collection {name!r}: the server returned no collection UUID")
    return str(uuid), str(coll.portable_data_hash())


def manifest_name(name: str) -> str:
    """A file name as a manifest writes it: space, tab, newline and backslash as octal escapes."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in name)


def _staged_manifest(staged: staging.StagedTar, filename: str) -> str:
    """A one-stream manifest of the staged blocks holding the single file ``filename``."""
    locators = " ".join(staged.locators) or "d41d8cd98f00b204e9800998ecf8427e+0"
    return f". {locators} 0:{staged.size}:{manifest_name(filename)}\n"


def single_tar(manifest_text: str) -> tuple[str, int]:
    """The one top-level `.tar` file of a manifest and its size; crunch-run's rule, raised as ArvadosError."""
    reader = arvados.collection.Collection(manifest_text)
    tars = [(n, reader[n].size()) for n in reader if n.endswith(".tar") and not hasattr(reader[n], "keys")]
    if len(tars) != 1:
        found = ", ".join(n for n, _ in tars) or "none"
        raise ArvadosError(f"an image collection must hold exactly one top-level .tar file; found {found}")
    return tars[0]


class Writable(Protocol):
    """Anything bytes can be written to (a file, a cache sink)."""

    def write(self, data: bytes, /) -> int: ...


def stream_tar(
    session: ArvadosSession, locator: str, out: Writable, progress: Progress | None = None
) -> tuple[str, int]:
    """Write the single tar of collection ``locator`` (UUID or PDH) to ``out``; return its file name and size."""
    with arvados_errors(f"downloading collection {locator}"):
        reader = arvados.collection.CollectionReader(locator, api_client=session.api, num_retries=4)
        filename, total = single_tar(reader.manifest_text())
        done = 0
        with reader.open(filename, "rb") as src:
            while chunk := src.read(CHUNK * 8):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    if done != total:
        raise ArvadosError(f"downloading {locator}: got {done} bytes of {filename}, the manifest says {total}")
    return filename, done


class _HashingFile:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.digest = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self.digest.update(data)
        return self.f.write(data)


def download_tar(session: ArvadosSession, locator: str, dest: Path, progress: Progress | None = None) -> DownloadedTar:
    """Stream the single tar of collection ``locator`` to ``dest`` atomically, hashing it on the way."""
    # mkstemp: a fresh name opened O_EXCL, so a symlink planted at a predictable temporary name is never followed.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            out = _HashingFile(f)
            filename, size = stream_tar(session, locator, out, progress)
        os.replace(tmp, dest)
        return DownloadedTar(filename=filename, size=size, sha256=out.digest.hexdigest())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheFullError(f"no room to download {locator} into {dest.parent}: free disk space") from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
