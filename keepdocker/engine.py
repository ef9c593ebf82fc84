"""A narrow interface over a Docker engine (docker-py, DOCKER_HOST honoured): resolve, pull, save, load, inspect.

Every engine call has a timeout. Quick calls use ``timeout``. Streams (save, load, pull) use ``stream_timeout`` as
a *stall* timeout (the longest silence tolerated between two reads: docker-py itself disables socket timeouts on
``get_image`` and ``pull``, so those streams are opened here with the timeout kept) and an optional overall
``time_limit`` per operation. Prefect's ``timeout_seconds`` cannot interrupt a blocked socket read in a worker thread,
so these are the timeouts that actually fire.

Errors are mapped onto keepdocker.errors:

* EngineUnavailableError (temporary): the socket is missing or refuses connections, a call or stream timed out, the
  engine went away mid-stream (connection reset, truncated chunked body, save stream without the tar end marker),
  or answered 502/503/504.
* ImageNotFoundError (permanent): no local image, or several, match; a pull of a name the registry does not have.
* EngineError (permanent unless a registry network failure during pull): any other refusal, with docker's message.

Queries (ping, version, info, images, inspect) on a plain ``unix://`` or ``tcp://`` engine go over a small
http.client connection instead of docker-py, which is imported only for streams, pulls and TLS or ssh engines: a
`keepdocker push` that finds nothing to do never pays for importing docker-py and requests.

The image ID that Arvados needs is the config digest read from the saved archive's manifest.json, not the ``Id`` the
engine reports (Docker 29's containerd store reports the manifest digest); ``save`` only returns the archive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import re
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, Protocol

from keepdocker.cache import CachedFile, TarCache
from keepdocker.errors import (
    EngineError,
    EngineUnavailableError,
    ImageNotFoundError,
    KeepdockerError,
    UsageError,
)
from keepdocker.options import setting
from keepdocker.progress import Progress
from keepdocker.references import ImageReference, parse_reference

__all__ = [
    "ByteSink",
    "DockerEngine",
    "EngineInfo",
    "LegacyLoadSupport",
    "LoadResult",
    "LocalImage",
    "MatchKind",
    "SavedArchive",
    "translate_engine_error",
]

_CHUNK = 1024 * 1024
_TAR_END = bytes(1024)
_TAIL = 64 * 1024
_DEFAULT_HOST = "unix:///var/run/docker.sock"
_TRANSIENT_PULL = re.compile(
    r"connection refused|connection reset|i/o timeout|timeout|no such host|temporary failure|"
    r"\b50[234]\b|service unavailable|bad gateway|unexpected eof|\beof\b|network is unreachable",
    re.IGNORECASE,
)
_MISSING_PULL = re.compile(r"not found|manifest unknown|pull access denied|repository does not exist", re.IGNORECASE)


class ByteSink(Protocol):
    """Anything bytes can be written to (a file, a hashing writer, a cache sink)."""

    def write(self, data: bytes, /) -> object: ...


class MatchKind(Enum):
    """How a reference matched a local image."""

    NAME = "name"  # repository:tag
    DIGEST = "digest"  # repository@sha256:…
    ID = "id"  # image ID or a prefix of it


@dataclass(frozen=True)
class LocalImage:
    """One image in the engine: its ID, familiar tags and digests, creation time (Unix seconds) and size."""

    id: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    created: int = 0
    size: int = 0
    matched_by: MatchKind = MatchKind.ID
    parent: str = ""

    def describe(self) -> str:
        """``sha256:0123456789ab (repo:tag, …)`` for messages."""
        names = ", ".join(self.tags) or "untagged"
        return f"{self.id[:19]} ({names})"


@dataclass(frozen=True)
class SavedArchive:
    """A ``docker save`` archive on disk, with the size and sha256 measured while writing it."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class LoadResult:
    """What ``docker load`` reported: the loaded image IDs and the tags it set."""

    image_ids: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class EngineInfo:
    """The engine's version and image store."""

    host: str
    version: str
    api_version: str
    storage_driver: str
    containerd_store: bool

    @property
    def major(self) -> int:
        """The major version number (0 when it cannot be read)."""
        m = re.match(r"(\d+)", self.version)
        return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class LegacyLoadSupport:
    """Whether the engine can ``docker load`` a v1 (pre-1.10) archive, and why."""

    supported: bool
    reason: str


def translate_engine_error(exc: BaseException, action: str, host: str) -> KeepdockerError:
    """Map a docker-py / requests / socket exception raised during ``action`` onto the keepdocker error tree."""
    if isinstance(exc, KeepdockerError):
        return exc
    import docker.errors
    import requests
    import urllib3.exceptions

    where = f"the Docker engine at {host}"
    if isinstance(exc, docker.errors.APIError):
        explanation = str(exc.explanation or exc).strip()
        status = exc.status_code or 0
        if status == 404:
            return ImageNotFoundError(f"{action}: {explanation} ({where})")
        if status in (502, 503, 504):
            return EngineUnavailableError(f"{action}: {where} is unavailable ({status}: {explanation}); retry")
        return EngineError(f"{action}: {where} refused: {explanation}")
    timeouts = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    if any(isinstance(e, timeouts) and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in _chain(exc)):
        return EngineUnavailableError(f"{action}: {where} did not answer in time ({exc}); retry later")
    broken = (
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.HTTPError,
        ConnectionError,
        FileNotFoundError,
    )
    if isinstance(exc, broken) or isinstance(exc.__cause__, broken):
        return EngineUnavailableError(
            f"{action}: {where} cannot be reached or went away ({_first_line(exc)}); check that dockerd runs and "
            "DOCKER_HOST points at it, then retry"
        )
    if isinstance(exc, docker.errors.DockerException):
        return EngineError(f"{action}: {where}: {_first_line(exc)}")
    if isinstance(exc, OSError):
        return EngineUnavailableError(f"{action}: {where}: {_first_line(exc)}; retry")
    return EngineError(f"{action}: {where}: {type(exc).__name__}: {_first_line(exc)}")


def _chain(exc: BaseException, depth: int = 5) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and exceptions carried as the first argument (requests wraps so)."""
    seen: set[int] = set()
    todo: list[tuple[BaseException, int]] = [(exc, 0)]
    while todo:
        current, level = todo.pop()
        if id(current) in seen or level > depth:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args[:1]]
        todo.extend((e, level + 1) for e in linked if isinstance(e, BaseException))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


class _HashingFile:
    """A file writer that hashes and counts."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "wb", buffering=_CHUNK)
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket (the engine's usual address)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """Open the unix socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _plain_error(exc: BaseException, action: str, host: str) -> KeepdockerError:
    """A socket or HTTP failure of a plain query as the keepdocker error translate_engine_error would give."""
    where = f"the Docker engine at {host}"
    if isinstance(exc, TimeoutError):
        return EngineUnavailableError(f"{action}: {where} did not answer in time ({exc}); retry later")
    if isinstance(exc, (ConnectionError, FileNotFoundError, http.client.HTTPException)):
        return EngineUnavailableError(
            f"{action}: {where} cannot be reached or went away ({_first_line(exc)}); check that dockerd runs and "
            "DOCKER_HOST points at it, then retry"
        )
    return EngineUnavailableError(f"{action}: {where}: {_first_line(exc)}; retry")


class DockerEngine:
    """One Docker engine: $DOCKER_HOST (and DOCKER_TLS_VERIFY/DOCKER_CERT_PATH) unless ``host`` is given.

    The connection is opened lazily, so constructing an engine never fails; the first call does.
    """

    def __init__(self, host: str | None = None, *, timeout: float = 60.0, stream_timeout: float = 300.0) -> None:
        self._host_arg = host
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._client: Any = None

    @property
    def host(self) -> str:
        """The engine address used (for messages)."""
        return self._host_arg or os.environ.get("DOCKER_HOST") or _DEFAULT_HOST

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- connection -----------------------------------------------------------------------------------------------

    @property
    def _api(self) -> Any:
        if self._client is None:
            import docker

            try:
                if self._host_arg is not None:
                    self._client = docker.APIClient(base_url=self._host_arg, timeout=self.timeout)
                else:
                    self._client = docker.APIClient(timeout=self.timeout, **docker.utils.kwargs_from_env())
            except Exception as exc:
                raise translate_engine_error(exc, "connecting", self.host) from exc
        return self._client

    @contextlib.contextmanager
    def _mapped(self, action: str) -> Iterator[None]:
        try:
            yield
        except KeepdockerError:
            raise
        except Exception as exc:
            raise translate_engine_error(exc, action, self.host) from exc

    # -- queries --------------------------------------------------------------------------------------------------

    def _plain_address(self) -> tuple[str, str, int] | None:
        """("unix", path, 0) or ("tcp", host, port) for an engine reachable without TLS; None otherwise."""
        if self._host_arg is None and (os.environ.get("DOCKER_TLS_VERIFY") or os.environ.get("DOCKER_CERT_PATH")):
            return None
        host = self.host
        if host.startswith("unix://"):
            return ("unix", host.removeprefix("unix://"), 0)
        if host.startswith("tcp://"):
            parsed = urllib.parse.urlsplit(host)
            if parsed.hostname and parsed.path in ("", "/"):
                return ("tcp", parsed.hostname, parsed.port or 2375)
        return None

    def _query(self, path: str, action: str) -> Any:
        """GET ``path`` from the engine over http.client and decode the JSON; NotImplemented when not plain."""
        address = self._plain_address()
        if address is None:
            return NotImplemented
        kind, where, port = address
        conn: http.client.HTTPConnection
        if kind == "unix":
            conn = _UnixHTTPConnection(where, self.timeout)
        else:
            conn = http.client.HTTPConnection(where, port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers={"Host": "docker", "Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _plain_error(exc, action, self.host) from exc
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                message = str(json.loads(body).get("message") or body.decode(errors="replace")).strip()
            except (ValueError, AttributeError):
                message = body.decode(errors="replace").strip()
            where_text = f"the Docker engine at {self.host}"
            if resp.status == 404:
                raise ImageNotFoundError(f"{action}: {message} ({where_text})")
            if resp.status in (502, 503, 504):
                raise EngineUnavailableError(f"{action}: {where_text} is unavailable ({resp.status}: {message}); retry")
            raise EngineError(f"{action}: {where_text} refused: {message}")
        return json.loads(body) if body.strip().startswith((b"{", b"[")) else body.decode(errors="replace")

    def ping(self) -> None:
        """Raise EngineUnavailableError unless the engine answers."""
        if self._query("/_ping", "ping") is not NotImplemented:
            return
        with self._mapped("ping"):
            self._api.ping()

    def info(self) -> EngineInfo:
        """The engine's version and image store."""
        version = self._query("/version", "reading engine version")
        if version is not NotImplemented:
            info = self._query("/info", "reading engine version")
        else:
            with self._mapped("reading engine version"):
                version = self._api.version()
                info = self._api.info()
        status = info.get("DriverStatus") or []
        containerd = any(
            isinstance(row, list) and len(row) == 2 and row[0] == "driver-type" and "containerd" in str(row[1])
            for row in status
        )
        return EngineInfo(
            host=self.host,
            version=str(version.get("Version", "")),
            api_version=str(version.get("ApiVersion", "")),
            storage_driver=str(info.get("Driver", "")),
            containerd_store=containerd,
        )

    def images(self) -> list[LocalImage]:
        """Every image in the engine, intermediate ones included."""
        rows = self._query("/images/json?all=1", "listing images")
        if rows is NotImplemented:
            with self._mapped("listing images"):
                rows = self._api.images(all=True)
        return [_local_image(row) for row in rows]

    def inspect(self, image: str) -> dict[str, Any]:
        """The engine's ``docker inspect`` document for an image name or ID."""
        doc: dict[str, Any] = self._query(
            f"/images/{urllib.parse.quote(image, safe='/:@')}/json", f"inspecting {image!r}"
        )
        if doc is NotImplemented:
            with self._mapped(f"inspecting {image!r}"):
                doc = self._api.inspect_image(image)
        return doc

    def untag(self, name: str) -> None:
        """Remove the name ``repo:tag`` from its image (the image stays when other names or children use it)."""
        with self._mapped(f"removing the tag {name!r}"):
            self._api.remove_image(name, noprune=True)

    def resolve(self, reference: ImageReference | str) -> LocalImage:
        """Exactly one local image for a name, digest or ID prefix; ImageNotFoundError for none or several."""
        ref = parse_reference(reference) if isinstance(reference, str) else reference
        images = self.images()
        if ref.repository is not None:
            by_name = [_with_match(i, MatchKind.NAME) for i in images if ref.repo_tag and _has_tag(i, ref.repo_tag)]
            if ref.digest is not None:
                wanted = f"{ref.repository}@{ref.digest}"
                by_digest = [_with_match(i, MatchKind.DIGEST) for i in images if _has_digest(i, wanted)]
                by_name = by_digest if ref.tag is None else [i for i in by_digest if ref.repo_tag in i.tags]
            if len(by_name) == 1:
                return by_name[0]
            if len(by_name) > 1:
                self._ambiguous(ref.familiar(), by_name)
        if ref.id_prefix is not None:
            by_id = [_with_match(i, MatchKind.ID) for i in images if _id_hex(i.id).startswith(ref.id_prefix)]
            if len(by_id) == 1:
                return by_id[0]
            if len(by_id) > 1:
                self._ambiguous(f"ID prefix {ref.id_prefix!r}", by_id)
        hint = ""
        if ref.repository is not None:
            others = sorted(t for i in images for t in i.tags if t.rpartition(":")[0] == ref.repository)
            if others:
                hint = f" (present: {', '.join(others[:10])})"
        what = ref.familiar() if ref.repository is not None else f"matches {ref.text!r}"
        raise ImageNotFoundError(
            f"no local image {what}{hint} in the Docker engine at {self.host}; "
            f"pull it ({setting('pull')}), build it, or check `docker images`"
        )

    def _ambiguous(self, what: str, candidates: list[LocalImage]) -> NoReturn:
        listed = "; ".join(c.describe() for c in candidates[:10])
        more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
        raise ImageNotFoundError(
            f"{what} matches {len(candidates)} local images: {listed}{more}; give more ID digits or a repository:tag"
        )

    # -- pull -----------------------------------------------------------------------------------------------------

    def pull(self, reference: ImageReference | str, time_limit: float | None = None) -> LocalImage:
        """Pull the reference (always, even when present: the local copy is refreshed) and return the local image."""
        ref = parse_reference(reference) if isinstance(reference, str) else reference
        if ref.repository is None:
            raise UsageError(f"cannot pull {ref.text!r}: it is an image ID; give repository[:tag]")
        import docker.auth
        import docker.errors
        from docker.utils.json_stream import json_stream

        deadline = _deadline(time_limit)
        action = f"pulling {ref.pull_name}"
        api = self._api
        with self._mapped(action):
            registry, _ = docker.auth.resolve_repository_name(ref.repository)
            headers = {}
            header = docker.auth.get_config_header(api, registry)
            if header:
                headers["X-Registry-Auth"] = header
            params = {"fromImage": ref.repository, "tag": ref.digest or ref.tag}
            response = api._post(
                api._url("/images/create"), params=params, headers=headers, stream=True, timeout=self.stream_timeout
            )
            with contextlib.closing(response):
                try:
                    api._raise_for_status(response)
                except docker.errors.APIError as exc:
                    self._pull_failed(ref, str(exc.explanation or exc).strip())
                for event in json_stream(_timed(response.iter_content(chunk_size=None), deadline, action, self.host)):
                    if isinstance(event, dict) and event.get("error"):
                        self._pull_failed(ref, _event_error(event))
        resolved = self.resolve(ref)
        return resolved

    def _pull_failed(self, ref: ImageReference, message: str) -> NoReturn:
        if _MISSING_PULL.search(message):
            raise ImageNotFoundError(f"pull of {ref.pull_name} failed: {message}; check the name, tag and registry")
        temporary = bool(_TRANSIENT_PULL.search(message))
        raise EngineError(f"pull of {ref.pull_name} failed: {message}", temporary=temporary)

    # -- save -----------------------------------------------------------------------------------------------------

    def save_to(
        self,
        images: Sequence[str],
        sink: ByteSink,
        time_limit: float | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Stream ``docker save`` of ``images`` (names or IDs) into ``sink``; return the byte count.

        ``progress(done, expected)`` hears the bytes so far; expected is the images' size in the engine (the tar
        is close to it), 0 when the engine does not say.

        The stream must end with the tar end marker: an engine that fails mid-save appends a JSON error after the
        bytes already sent, and one that dies truncates the stream; both raise instead of returning.
        """
        if not images:
            raise UsageError("save needs at least one image")
        names = list(images)
        action = f"saving {', '.join(names)}"
        deadline = _deadline(time_limit)
        api = self._api
        total = 0
        tail = b""
        expected = self._expected_size(names) if progress is not None else 0
        with self._mapped(action):
            response = api._get(
                api._url("/images/get"), params={"names": names}, stream=True, timeout=self.stream_timeout
            )
        with contextlib.closing(response):
            with self._mapped(action):
                api._raise_for_status(response)
                chunks = _timed(response.iter_content(chunk_size=_CHUNK), deadline, action, self.host)
            while True:
                with self._mapped(action):  # only the engine side is mapped; sink errors (disk full) pass as they are
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                sink.write(chunk)
                total += len(chunk)
                if progress is not None:
                    # The engine's size is an estimate: once passed, the total is unknown until finish().
                    progress(total, expected if expected > total else 0)
                tail = (tail + chunk)[-_TAIL:] if len(chunk) < _TAIL else chunk[-_TAIL:]
        if total % 512 == 0 and tail.endswith(_TAR_END):
            return total
        error = _trailing_error(tail)
        if error is not None:
            raise EngineError(f"{action}: the Docker engine at {self.host} failed during the save: {error}")
        raise EngineUnavailableError(
            f"{action}: the stream from {self.host} ended after {total} bytes without the tar end marker; the engine "
            "may have restarted, retry"
        )

    def save(self, images: Sequence[str], path: Path | str, time_limit: float | None = None) -> SavedArchive:
        """``docker save`` into ``path`` (atomically: a temporary name, then rename), hashing while writing."""
        path = Path(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        out = _HashingFile(fd)
        try:
            try:
                self.save_to(images, out, time_limit)
                out.finish()
            finally:
                out.close()
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return SavedArchive(path=path, size=out.size, sha256=out.hash.hexdigest())

    def _expected_size(self, names: Sequence[str]) -> int:
        """The images' total size as the engine reports it (0 when it cannot say)."""
        try:
            return sum(int(self.inspect(n).get("Size") or 0) for n in names)
        except KeepdockerError:
            return 0

    def saver(
        self, images: Sequence[str], time_limit: float | None = None, progress: Progress | None = None
    ) -> Callable[[ByteSink], None]:
        """A fill callable for TarCache: ``cache.pinned(image_id, engine.saver([image_id]))`` holds it during upload."""

        def fill(sink: ByteSink) -> None:
            self.save_to(images, sink, time_limit, progress)

        return fill

    def save_cached(
        self, cache: TarCache, image_id: str, time_limit: float | None = None, progress: Progress | None = None
    ) -> CachedFile:
        """The ``docker save`` archive of one image from ``cache`` (key = the engine's image ID), saving it if absent.

        Concurrent callers for one image (threads or processes sharing the cache directory) save it once.
        """
        return cache.put_stream(image_id, self.saver([image_id], time_limit, progress))

    # -- load -----------------------------------------------------------------------------------------------------

    def load(self, archive: Path | str, time_limit: float | None = None) -> LoadResult:
        """``docker load`` an archive file; return the image IDs and tags the engine reports (see ``load_stream``)."""
        archive = Path(archive)
        try:
            f = open(archive, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"cannot read the archive {archive}: {exc.strerror}") from exc
        with f:
            return self.load_stream(iter(lambda: f.read(_CHUNK), b""), f"loading {archive}", time_limit)

    def load_stream(
        self, chunks: Iterable[bytes], action: str = "loading an image stream", time_limit: float | None = None
    ) -> LoadResult:
        """``docker load`` a tar given as byte chunks, sent as they come (nothing is written locally).

        ``action`` names the source in messages. A KeepdockerError raised by ``chunks`` (the source failed) passes
        through as it is, so a failing source is not mistaken for a failing engine.

        Legacy (v1) loads report nothing, so then the result is what changed in the engine's image list across the
        load: the new top images (not a parent of another new image) and their tags. That fallback cannot see an
        image that was already present with the same tags, and raises EngineError for it; concurrent loads into
        the same engine can blur it.
        """
        from docker.utils.json_stream import json_stream

        deadline = _deadline(time_limit)
        api = self._api
        ids: list[str] = []
        tags: list[str] = []
        before = {i.id: i for i in self.images()}
        with self._mapped(action):
            response = api._post(
                api._url("/images/load"),
                data=_timed(chunks, deadline, action, self.host),
                params={"quiet": "0"},
                headers={"Content-Type": "application/x-tar"},
                stream=True,
                timeout=self.stream_timeout,
            )
            with contextlib.closing(response):
                api._raise_for_status(response)
                for event in json_stream(_timed(response.iter_content(chunk_size=None), deadline, action, self.host)):
                    if not isinstance(event, dict):
                        continue
                    if event.get("error"):
                        reason = _event_error(event)
                        raise EngineError(f"{action}: the Docker engine at {self.host} refused it: {reason}")
                    line = str(event.get("stream", "")).strip()
                    if line.startswith("Loaded image ID: "):
                        ids.append(line[len("Loaded image ID: ") :].strip())
                    elif line.startswith("Loaded image: "):
                        tags.append(line[len("Loaded image: ") :].strip())
        for tag in tags:
            image_id = str(self.inspect(tag).get("Id", ""))
            if image_id and image_id not in ids:
                ids.append(image_id)
        if not ids:
            ids, tags = _changed_tops(before, self.images())
        if not ids:
            raise EngineError(
                f"{action}: the Docker engine at {self.host} reported no loaded image and its image list did not "
                "change (a legacy load of an image already present); remove that image from the engine and retry"
            )
        return LoadResult(image_ids=tuple(ids), tags=tuple(tags))

    # -- legacy (v1) loading --------------------------------------------------------------------------------------

    def legacy_load_support(self) -> LegacyLoadSupport:
        """Whether this engine can ``docker load`` v1 (pre-1.10) archives: Docker <= 28 with a graphdriver store."""
        info = self.info()
        label = f"the Docker engine at {self.host} (Docker {info.version or 'unknown'}"
        if info.containerd_store:
            return LegacyLoadSupport(
                False,
                f"{label}, containerd image store) cannot load v1 (pre-1.10) archives: the containerd store never "
                "could; use the native converter or a Docker <= 28 engine with a graphdriver store",
            )
        if info.major >= 29:
            return LegacyLoadSupport(
                False,
                f"{label}) cannot load v1 (pre-1.10) archives: Docker 29 removed legacy loading; use the native "
                "converter or a Docker <= 28 engine with a graphdriver store",
            )
        if info.major == 0:
            return LegacyLoadSupport(False, f"{label}) reports no version; cannot tell whether it loads v1 archives")
        return LegacyLoadSupport(
            True, f"{label}, {info.storage_driver or 'graphdriver'} store) can load v1 (pre-1.10) archives"
        )

    def require_legacy_load(self) -> None:
        """Raise EngineError (permanent) with the reason when this engine cannot load v1 archives."""
        support = self.legacy_load_support()
        if not support.supported:
            raise EngineError(support.reason)


def _deadline(time_limit: float | None) -> float | None:
    if time_limit is None:
        return None
    if time_limit <= 0:
        raise UsageError(f"time limit must be positive, not {time_limit}")
    return time.monotonic() + time_limit


def _timed(chunks: Iterable[bytes], deadline: float | None, action: str, host: str) -> Iterator[bytes]:
    """Pass chunks through, raising EngineUnavailableError once the overall deadline has passed."""
    for chunk in chunks:
        if deadline is not None and time.monotonic() > deadline:
            raise EngineUnavailableError(f"{action}: the Docker engine at {host} did not finish within the time limit")
        yield chunk


def _event_error(event: dict[str, Any]) -> str:
    detail = event.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"]).strip()
    return str(event.get("error", "")).strip()


def _trailing_error(tail: bytes) -> str | None:
    """The message of a JSON error the engine appended to a failed save stream, if any."""
    start = tail.rfind(b'{"errorDetail"')
    if start < 0:
        start = tail.rfind(b'{"error"')
    if start < 0:
        return None
    try:
        event = json.loads(tail[start:].decode("utf-8", errors="replace").strip())
    except ValueError:
        return None
    return _event_error(event) if isinstance(event, dict) else None


def _changed_tops(before: dict[str, LocalImage], after: list[LocalImage]) -> tuple[list[str], list[str]]:
    """Images that are new or gained tags across a load, minus those that are parents of other new ones."""
    changed = [i for i in after if i.id not in before or set(i.tags) - set(before[i.id].tags)]
    parents = {i.parent for i in changed}
    tops = [i for i in changed if i.id not in parents]
    return [i.id for i in tops], [t for i in tops for t in i.tags if i.id not in before or t not in before[i.id].tags]


def _local_image(row: dict[str, Any]) -> LocalImage:
    def names(field: str) -> tuple[str, ...]:
        values = row.get(field) or []
        return tuple(v for v in values if isinstance(v, str) and not v.startswith("<none>"))

    return LocalImage(
        id=str(row.get("Id", "")),
        tags=names("RepoTags"),
        digests=names("RepoDigests"),
        created=int(row.get("Created") or 0),
        size=int(row.get("Size") or 0),
        parent=str(row.get("ParentId") or ""),
    )


def _with_match(image: LocalImage, kind: MatchKind) -> LocalImage:
    return dataclasses.replace(image, matched_by=kind)


def _normalized(name: str) -> str | None:
    try:
        return parse_reference(name).familiar()
    except UsageError:
        return None


def _has_tag(image: LocalImage, repo_tag: str) -> bool:
    return repo_tag in image.tags or any(_normalized(t) == repo_tag for t in image.tags)


def _has_digest(image: LocalImage, wanted: str) -> bool:
    return wanted in image.digests or any(_normalized(d) == wanted for d in image.digests)


def _id_hex(image_id: str) -> str:
    return image_id.split(":", 1)[1] if ":" in image_id else image_id
