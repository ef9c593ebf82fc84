"""The Docker engine interface against a real engine (and a scripted fake socket for failure timing)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from keepdocker.cache import TarCache
from keepdocker.engine import DockerEngine, EngineInfo, MatchKind
from keepdocker.errors import EngineError, EngineUnavailableError, ImageNotFoundError, UsageError
from keepdocker.testing.dockerd import private_engine
from keepdocker.testing.images import build_image
from keepdocker.testing.registry import free_port, local_registry, push_to_registry

REPO = "kdtest-engine/app"


def _need(reason: str) -> None:
    """Fail under CI, skip elsewhere (as the docker_host fixture does)."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine(docker_host: str) -> Iterator[DockerEngine]:
    """A DockerEngine on the session's engine."""
    with DockerEngine(docker_host) as eng:
        yield eng


@pytest.fixture(scope="module")
def image_id(docker_host: str) -> str:
    """A small image tagged kdtest-engine/app:v1 and :latest, and under two registry-style names."""
    iid = build_image(docker_host, REPO, "v1", seed=41)
    client = docker.APIClient(base_url=docker_host)
    try:
        client.tag(iid, REPO, "latest")
        client.tag(iid, "127.0.0.1:5999/kdtest-engine/app", "v1")
        client.tag(iid, "registry.example/kdtest-engine/app", "v1")
    finally:
        client.close()
    return iid


@pytest.mark.engine
@pytest.mark.parametrize(
    ("reference", "kind"),
    [
        (REPO, MatchKind.NAME),
        (f"{REPO}:v1", MatchKind.NAME),
        ("127.0.0.1:5999/kdtest-engine/app:v1", MatchKind.NAME),
        ("registry.example:443/kdtest-engine/app:v1", MatchKind.NAME),
        ("docker.io/kdtest-engine/app:v1", MatchKind.NAME),
    ],
)
def test_resolve_names(engine: DockerEngine, image_id: str, reference: str, kind: MatchKind) -> None:
    """repo, repo:tag, registry:port/repo:tag and registry:443/repo:tag all resolve to the one image."""
    found = engine.resolve(reference)
    assert found.id == image_id and found.matched_by is kind
    assert f"{REPO}:v1" in found.tags


@pytest.mark.engine
def test_resolve_unique_id_prefixes(engine: DockerEngine, image_id: str) -> None:
    """A full ID, a sha256: prefix and a bare hex prefix each resolve by ID."""
    hex_id = image_id.split(":", 1)[1]
    for reference in (image_id, hex_id, f"sha256:{hex_id[:10]}", hex_id[:12]):
        found = engine.resolve(reference)
        assert (found.id, found.matched_by) == (image_id, MatchKind.ID)


@pytest.mark.engine
def test_ambiguous_id_prefix_lists_candidates(engine: DockerEngine, docker_host: str) -> None:
    """A prefix shared by several images raises ImageNotFoundError naming each candidate."""
    by_first: dict[str, str] = {}
    for seed in range(100, 117):  # 17 images: two must share a first hex digit
        iid = build_image(docker_host, "kdtest-engine/many", f"s{seed}", seed=seed)
        first = iid.split(":", 1)[1][0]
        if first in by_first and by_first[first] != iid:
            pair = (by_first[first], iid)
            break
        by_first[first] = iid
    else:
        pytest.fail("17 images without a shared first hex digit")
    with pytest.raises(ImageNotFoundError, match=r"ID prefix '.' matches \d+ local images") as info:
        engine.resolve(f"sha256:{first}")
    assert pair[0][:19] in info.value.message and pair[1][:19] in info.value.message
    assert not info.value.temporary


@pytest.mark.engine
def test_missing_image_message(engine: DockerEngine, image_id: str) -> None:
    """A tag that does not exist is ImageNotFoundError naming it, the engine, and the tags that do exist."""
    with pytest.raises(
        ImageNotFoundError, match=r"no local image kdtest-engine/app:nope .*present: .*kdtest-engine/app:v1"
    ) as info:
        engine.resolve(f"{REPO}:nope")
    assert engine.host in info.value.message
    with pytest.raises(ImageNotFoundError, match="no local image matches 'sha256:fffffffffffff'"):
        engine.resolve("sha256:fffffffffffff")


@pytest.mark.engine
def test_missing_image_hint_follows_the_callers_spelling(engine: DockerEngine, image_id: str) -> None:
    """The pull hint is a parameter (pull=true) for flow runs and a flag (--pull) under the CLI."""
    from keepdocker.options import use_cli_spelling

    with pytest.raises(ImageNotFoundError, match=r"pull it \(pull=true\)"):
        engine.resolve(f"{REPO}:nope")
    use_cli_spelling()
    try:
        with pytest.raises(ImageNotFoundError, match=r"pull it \(--pull\)"):
            engine.resolve(f"{REPO}:nope")
    finally:
        use_cli_spelling(False)


@pytest.mark.engine
def test_save_load_round_trip(engine: DockerEngine, docker_host: str, tmp_path: Path) -> None:
    """A saved archive, loaded after the image is removed, gives back the same ID and tag; size and sha256 match."""
    iid = build_image(docker_host, "kdtest-engine/roundtrip", "r1", seed=7, payload_bytes=300_000)
    saved = engine.save(["kdtest-engine/roundtrip:r1"], tmp_path / "img.tar")
    data = saved.path.read_bytes()
    assert saved.size == len(data) and saved.sha256 == hashlib.sha256(data).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["img.tar"]
    client = docker.APIClient(base_url=docker_host)
    try:
        client.remove_image("kdtest-engine/roundtrip:r1", force=True)
    finally:
        client.close()
    with pytest.raises(ImageNotFoundError):
        engine.resolve("kdtest-engine/roundtrip:r1")
    loaded = engine.load(saved.path)
    assert loaded.image_ids == (iid,) and loaded.tags == ("kdtest-engine/roundtrip:r1",)
    assert engine.inspect(iid)["Id"] == iid


@pytest.mark.engine
def test_load_v1_fixture_and_garbage(engine: DockerEngine, tmp_path: Path, moby_v1_archive: Path) -> None:
    """The engine legacy-loads the real v1 fixture to its known ID; a non-archive is a permanent EngineError."""
    assert engine.legacy_load_support().supported
    loaded = engine.load(moby_v1_archive)
    assert any(i.startswith("sha256:a9e31d6f186f") for i in loaded.image_ids)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar" * 100)
    with pytest.raises(EngineError) as info:
        engine.load(junk)
    assert not info.value.temporary
    with pytest.raises(UsageError, match="cannot read the archive"):
        engine.load(tmp_path / "absent.tar")


def test_legacy_load_support_by_version() -> None:
    """Docker <= 28 on a graphdriver store can legacy-load; 29+ or the containerd store cannot, with a reason."""

    class Fake(DockerEngine):
        def __init__(self, info: EngineInfo) -> None:
            super().__init__("unix:///fake.sock")
            self._info = info

        def info(self) -> EngineInfo:
            return self._info

    def info(version: str, containerd: bool = False) -> EngineInfo:
        return EngineInfo("unix:///fake.sock", version, "1.47", "overlay2", containerd)

    assert Fake(info("28.5.2")).legacy_load_support().supported
    assert Fake(info("20.10.24+dfsg1")).legacy_load_support().supported
    v29 = Fake(info("29.0.1"))
    assert not v29.legacy_load_support().supported
    with pytest.raises(EngineError, match="Docker 29 removed legacy loading") as err:
        v29.require_legacy_load()
    assert not err.value.temporary
    with pytest.raises(EngineError, match="containerd image store"):
        Fake(info("27.1.0", containerd=True)).require_legacy_load()


@pytest.mark.engine
def test_save_into_cache_and_reuse(engine: DockerEngine, image_id: str, tmp_path: Path) -> None:
    """save_cached writes the archive once and reuses it; a truncated entry is detected and saved again."""
    cache = TarCache(tmp_path / "cache")
    first = engine.save_cached(cache, image_id)
    assert first.created and first.key == image_id
    again = engine.save_cached(cache, image_id)
    assert not again.created and again.sha256 == first.sha256
    os.truncate(first.path, first.size // 2)
    healed = engine.save_cached(cache, image_id)
    assert healed.created and healed.size == first.size and healed.sha256 == first.sha256
    with cache.pinned(image_id, engine.saver([image_id])) as held:
        assert held is not None and not held.created and held.sha256 == first.sha256
        assert not cache.invalidate(image_id)  # in use: cannot be removed or evicted


@pytest.mark.engine
def test_concurrent_thread_saves_happen_once(engine: DockerEngine, image_id: str, tmp_path: Path) -> None:
    """Four threads saving one image into one cache directory: one save, four identical results."""
    results = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with DockerEngine(engine.host) as own:
                results.append(own.save_cached(TarCache(tmp_path / "cache"), image_id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(r.created for r in results) == 1 and len({r.sha256 for r in results}) == 1


def _save_in_child(host: str, root: str, image: str, start: float) -> None:
    """Child process: save one image into the cache at a common start time; exit 10 if it did the save."""
    time.sleep(max(0.0, start - time.time()))
    with DockerEngine(host) as eng:
        entry = eng.save_cached(TarCache(root), image)
    os._exit(10 if entry.created else 0)


@pytest.mark.engine
def test_concurrent_process_saves_happen_once(engine: DockerEngine, image_id: str, tmp_path: Path) -> None:
    """Two processes saving one image into one cache directory: exactly one of them saves."""
    start = time.time() + 0.5
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_save_in_child, args=(engine.host, str(tmp_path / "c"), image_id, start)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(p.exitcode or 0 for p in procs) == [0, 10]


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"])
def test_unreachable_engine_is_temporary(host: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DOCKER_HOST pointing at nothing gives EngineUnavailableError (temporary) naming the host; nothing cached."""
    monkeypatch.setenv("DOCKER_HOST", host)
    eng = DockerEngine(timeout=3)
    with pytest.raises(EngineUnavailableError, match="cannot be reached") as info:
        eng.resolve("busybox")
    assert info.value.temporary and host in info.value.message
    cache = TarCache(tmp_path)
    with pytest.raises(EngineUnavailableError):
        eng.save_cached(cache, "sha256:" + "0" * 64)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.engine
def test_engine_killed_mid_save(tmp_path: Path) -> None:
    """dockerd killed while a save streams: EngineUnavailableError, and the cache keeps nothing partial."""
    try:
        ctx = private_engine()
        own = ctx.__enter__()
    except RuntimeError as exc:
        _need(str(exc))
    try:
        iid = build_image(own.host, "kdtest-engine/killed", "k", seed=3, payload_bytes=64 << 20)
        cache = TarCache(tmp_path / "cache")
        eng = DockerEngine(own.host, stream_timeout=20)
        killed: list[int] = []

        def fill(sink: object) -> None:
            class Killer:
                def write(self, data: bytes, /) -> None:
                    if not killed:
                        os.kill(own.pid, signal.SIGKILL)
                        killed.append(len(data))
                    sink.write(data)  # type: ignore[attr-defined]

            eng.save_to([iid], Killer())

        with pytest.raises(EngineUnavailableError) as info:
            cache.put_stream(iid, fill)
        assert killed and info.value.temporary
        assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
        with pytest.raises(EngineUnavailableError):
            eng.resolve(iid)
    finally:
        ctx.__exit__(None, None, None)


# -- a scripted fake engine on a unix socket, for failure timing that a real engine cannot be made to show --------


@contextlib.contextmanager
def fake_engine(tmp_path: Path, save_behaviour: Callable[[socket.socket], None]) -> Iterator[str]:
    """Serve /version and /images/get on a unix socket; the save response body is written by ``save_behaviour``."""
    path = tmp_path / "fake.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            target = request.split(b" ", 2)[1].decode()
            if target.endswith("/version") or target == "/version":
                body = json.dumps({"ApiVersion": "1.41", "Version": "20.10.0"}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            elif "/images/get" in target:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n")
                conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
                save_behaviour(conn)
            else:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        stop.set()
        thread.join()
        server.close()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_stalled_save_times_out(tmp_path: Path) -> None:
    """A save stream that goes silent longer than stream_timeout raises EngineUnavailableError (temporary)."""

    def stall(conn: socket.socket) -> None:
        conn.sendall(_chunk(b"\0" * 512))
        time.sleep(3)

    with fake_engine(tmp_path, stall) as host:
        eng = DockerEngine(host, timeout=5, stream_timeout=0.5)
        started = time.monotonic()
        with open(os.devnull, "wb") as sink, pytest.raises(EngineUnavailableError, match="in time") as info:
            eng.save_to(["x"], sink)
        assert time.monotonic() - started < 2.5 and info.value.temporary


def test_save_with_appended_engine_error(tmp_path: Path) -> None:
    """An engine that fails mid-save appends a JSON error to the stream: EngineError carrying its message."""

    def fail(conn: socket.socket) -> None:
        conn.sendall(_chunk(b"x" * 2048))
        conn.sendall(_chunk(b'{"errorDetail":{"message":"layer does not exist"},"error":"layer does not exist"}\r\n'))
        conn.sendall(b"0\r\n\r\n")

    with fake_engine(tmp_path, fail) as host:
        with pytest.raises(EngineError, match="failed during the save: layer does not exist") as info:
            DockerEngine(host).save(["x"], tmp_path / "out.tar")
        assert not info.value.temporary
        assert not (tmp_path / "out.tar").exists() and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("ending", ["clean", "reset"])
def test_save_stream_cut_short(tmp_path: Path, ending: str) -> None:
    """A stream that ends without the tar end marker, cleanly or by a reset, is EngineUnavailableError."""

    def cut(conn: socket.socket) -> None:
        conn.sendall(_chunk(b"y" * 1536))
        if ending == "clean":
            conn.sendall(b"0\r\n\r\n")
        else:
            conn.shutdown(socket.SHUT_RDWR)

    with fake_engine(tmp_path, cut) as host:
        with pytest.raises(EngineUnavailableError) as info:
            DockerEngine(host).save(["x"], tmp_path / "out.tar")
        assert info.value.temporary
        assert list(tmp_path.glob("*.tar")) == [] and list(tmp_path.glob("*.part")) == []


def test_engine_that_never_answers(tmp_path: Path) -> None:
    """A socket that accepts but never answers times out as EngineUnavailableError on the first call."""
    path = tmp_path / "mute.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    try:
        with pytest.raises(EngineUnavailableError, match="did not answer in time"):
            DockerEngine(f"unix://{path}", timeout=0.5).ping()
    finally:
        server.close()


# -- pulls from a local registry (Debian's docker-registry) -------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry on 127.0.0.1:<free port> (insecure by default for dockerd), for the module."""
    try:
        with local_registry(tmp_path_factory.mktemp("registry")) as address:
            yield address
    except RuntimeError as exc:
        _need(str(exc))


@pytest.mark.engine
def test_pull_always_refreshes(engine: DockerEngine, docker_host: str, registry: str) -> None:
    """pull fetches the registry's current image even when an older one is present locally under that name."""
    name = f"{registry}/kdtest/pull"
    old = build_image(docker_host, "kdtest-engine/pull-old", "o", seed=61)
    new = build_image(docker_host, "kdtest-engine/pull-new", "n", seed=62)
    push_to_registry(docker_host, new, name, "t")  # the registry has `new`
    client = docker.APIClient(base_url=docker_host)
    try:
        client.tag(old, name, "t")  # the engine has `old` under the same name
    finally:
        client.close()
    assert engine.resolve(f"{name}:t").id == old
    pulled = engine.pull(f"{name}:t", time_limit=120)
    assert pulled.id == new and f"{name}:t" in pulled.tags
    assert any(d.startswith(f"{name}@sha256:") for d in engine.resolve(f"{name}:t").digests)


@pytest.mark.engine
def test_pull_failures(engine: DockerEngine, registry: str) -> None:
    """A missing tag is ImageNotFoundError; an unreachable registry is a temporary error; IDs cannot be pulled."""
    with pytest.raises(ImageNotFoundError) as missing:
        engine.pull(f"{registry}/kdtest/absent:nope")
    assert not missing.value.temporary
    with pytest.raises(EngineError) as down:
        engine.pull(f"127.0.0.1:{free_port()}/kdtest/x:y")
    assert down.value.temporary
    with pytest.raises(UsageError, match="image ID"):
        engine.pull("sha256:abcdef")
