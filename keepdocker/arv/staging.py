"""Upload while the tar is written: a first push's blocks go to Keep as `docker save` streams into the cache.

arv-keepdocker saves the image to a file and then uploads the file: two passes, one after the other. Here the bytes
of a save are also written, as they stream into the tar cache, to an SDK collection writer whose put threads store
64 MiB blocks in Keep while the save goes on. The signed locators are kept in this process only (a signed locator
grants read access, so it is never written to disk or passed as a task parameter), keyed by the cluster, the
token and the tar's sha256. The upload later finds them (``take``) and only creates the collection; it uploads as
before when nothing was staged for that tar under that token, or when the staged blocks are refused.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import arvados.collection

from keepdocker.arv.client import ArvadosSession, arvados_errors
from keepdocker.cache import CacheSink

if TYPE_CHECKING:
    from keepdocker.engine import ByteSink

__all__ = ["StagedTar", "StagingUpload", "take"]

_PUT_THREADS = 2
_STAGED_NAME = "staged.tar"
_LOCATOR = re.compile(r"[0-9a-f]{32}\+[0-9]+(\+\S+)?")


@dataclass(frozen=True)
class StagedTar:
    """A tar already stored in Keep: its signed block locators, size and sha256."""

    sha256: str
    size: int
    locators: tuple[str, ...]


def _keep_errors() -> AbstractContextManager[None]:
    return arvados_errors("storing the image's blocks in Keep while saving")


def _key(session: ArvadosSession, sha256: str) -> tuple[str, str, str]:
    token = hashlib.sha256(session.config.token.encode()).hexdigest()  # signatures are valid for this token only
    return session.config.host, token, sha256


_lock = threading.Lock()
_staged: dict[tuple[str, str, str], StagedTar] = {}


def take(session: ArvadosSession, sha256: str, size: int) -> StagedTar | None:
    """The blocks staged in this process for the tar with this sha256 and size (each staging is taken once)."""
    with _lock:
        staged = _staged.pop(_key(session, sha256), None)
    return staged if staged is not None and staged.size == size else None


class _Tee:
    """Writes every chunk to the cache sink first, then to the Keep writer."""

    def __init__(self, sink: CacheSink, keep: Any) -> None:
        self.sink = sink
        self.keep = keep

    def write(self, data: bytes, /) -> int:
        self.sink.write(data)
        with _keep_errors():
            self.keep.write(data)
        return len(data)


class StagingUpload:
    """Wraps a cache fill so its bytes are also put into Keep, and offers them to this process's upload."""

    def __init__(self, session: ArvadosSession) -> None:
        self.session = session
        self.staged: StagedTar | None = None

    def tee(self, fill: Callable[[ByteSink], object]) -> Callable[[CacheSink], None]:
        """A fill callable that runs ``fill`` into the cache sink and into Keep at once.

        The blocks are offered (under the sink's sha256) before the cache entry is committed, so the upload that
        follows the save always finds them.
        """

        def teed(sink: CacheSink) -> None:
            coll = arvados.collection.Collection(api_client=self.session.api, num_retries=4, put_threads=_PUT_THREADS)
            try:
                with _keep_errors():
                    out = coll.open(_STAGED_NAME, "wb")
                tee = _Tee(sink, out)
                try:
                    fill(tee)  # the save's own errors pass through as they are
                except BaseException:
                    out.close(flush=False)
                    raise
                with _keep_errors():
                    out.close()
                    text = coll.manifest_text()  # waits until every block is stored; the locators are signed
            finally:
                coll.stop_threads()
            locators = tuple(t for t in text.split()[1:] if _LOCATOR.fullmatch(t))
            self.staged = StagedTar(sink.hexdigest(), sink.bytes_written, locators)
            with _lock:
                _staged[_key(self.session, self.staged.sha256)] = self.staged

        return teed
