"""Benchmark: `keepdocker push --from-registry` beside `docker pull` + `arv-keepdocker` for a ~500 MiB image.

Run: ``uv run python benchmarks/bench_registry.py [--mib 500] [--repeat 1]``. Needs root, dockerd, docker-registry and
skopeo. Builds one image (random payload, so gzip cannot shrink it) in a private dockerd, pushes it to a loopback
docker-registry and removes it from the engine. Then per round, each on a fresh stand-in, HOME and cache:

* keepdocker: ``keepdocker push REF --from-registry`` with DOCKER_HOST pointing at nothing, against a Prefect server
  of its own (PREFECT_API_URL exported, as bench_push.py's ``server`` mode);
* the engine path: ``docker pull REF`` (timed through the Docker API) then ``arv-keepdocker REF``; the image is
  removed from the engine after each round so every pull really downloads.

Prints wall seconds, the ratio (target <= 1.0) and where keepdocker's time went: the flow's task seconds read back
from the server, and, measured in-process on the same image, the parts of the fetch task (skopeo copy into a ``dir:``
layout, then the archive written straight into the cache entry).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_push
import docker
from bench_push import (
    BIN,
    MIB,
    Timed,
    _seconds,
    api_post,
    bench_standin,
    bytecode_env,
    init_prefect_home,
    prefect_env,
    prefect_server,
    task_runs,
    timed,
    warm_bytecode,
)

from keepdocker.cache import TarCache
from keepdocker.images.distribution import parse_manifest, write_docker_archive
from keepdocker.references import parse_reference
from keepdocker.registry import RegistryOptions, _session, fetch_to_cache, registry_host, resolve_image
from keepdocker.testing.dockerd import private_engine
from keepdocker.testing.images import build_image
from keepdocker.testing.registry import local_registry, push_to_registry


def env_for(standin_env: dict[str, str], home: Path, docker_host: str, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: fresh HOME and cache, the stand-in's credentials, DOCKER_HOST as given."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in bytecode_env().items() if not k.startswith(("PREFECT_", "ARVADOS_", "KEEPDOCKER_"))}
    env.update(standin_env)
    env.update(
        {
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "KEEPDOCKER_CACHE_DIR": str(home / "kdcache"),
            "DOCKER_HOST": docker_host,
            **extra,
        }
    )
    return env


def keepdocker_round(work: Path, ref: str, extra: dict[str, str], image_bytes: int) -> Timed:
    """One `keepdocker push --from-registry` on a fresh stand-in, with no engine."""
    with bench_standin(work / "standin") as standin:
        env = env_for(standin.client_env({}), work / "home", f"unix://{work}/no-engine.sock", extra)
        before = standin.stats()["requests"].get("keep PUT bytes", 0)
        result = timed([str(BIN / "keepdocker"), "push", ref, "--from-registry"], env)
        uploaded = standin.stats()["requests"].get("keep PUT bytes", 0) - before
    if uploaded < image_bytes * 0.9:
        raise SystemExit(f"keepdocker uploaded only {uploaded} bytes: it did not really upload")
    return result


def engine_round(work: Path, ref: str, docker_host: str, image_bytes: int) -> tuple[float, Timed]:
    """`docker pull` then `arv-keepdocker` on a fresh stand-in; the pulled image is removed afterwards."""
    repo, _, tag = ref.rpartition(":")
    client = docker.APIClient(base_url=docker_host, timeout=1800)
    with bench_standin(work / "standin") as standin:
        env = env_for(standin.client_env({}), work / "home", docker_host, {})
        started = time.perf_counter()
        for event in client.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise SystemExit(f"docker pull failed: {event['error']}")
        pulled = time.perf_counter() - started
        before = standin.stats()["requests"].get("keep PUT bytes", 0)
        result = timed([str(BIN / "arv-keepdocker"), repo, tag], env)
        uploaded = standin.stats()["requests"].get("keep PUT bytes", 0) - before
    client.remove_image(ref, force=True)
    if uploaded < image_bytes * 0.9:
        raise SystemExit(f"arv-keepdocker uploaded only {uploaded} bytes: it did not really upload")
    return pulled, result


def last_push_breakdown(server_url: str) -> str:
    """Flow and task seconds of the newest push-image run on the server."""
    (run,) = api_post(
        server_url,
        "/flow_runs/filter",
        {"flows": {"name": {"any_": ["push-image"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1},
    )
    per = {str(t["name"]).split("-")[0]: round(_seconds(t), 2) for t in task_runs(server_url, run["id"])}
    return f"flow {_seconds(run):.1f} s, tasks {per}"


def fetch_parts(ref: str, work: Path) -> dict[str, float]:
    """Seconds of the fetch task's parts, in-process: skopeo copy, the archive written into the cache; the whole."""
    image = resolve_image(ref)
    parts: dict[str, float] = {}
    with _session(registry_host(parse_reference(image.pinned)), RegistryOptions(), work) as skopeo:
        blobs = skopeo.work / "blobs"
        t = time.perf_counter()
        skopeo.copy_to_dir(image.pinned, blobs, "bench")
        parts["skopeo copy"] = time.perf_counter() - t
        manifest = parse_manifest((blobs / "manifest.json").read_bytes())
        t = time.perf_counter()
        TarCache(work / "cache1").put_stream("x", lambda sink: write_docker_archive(blobs, manifest, sink.write))
        parts["archive into the cache (size pass, verified write, fsync)"] = time.perf_counter() - t
    t = time.perf_counter()
    fetch_to_cache(image, TarCache(work / "cache2"))
    parts["fetch_to_cache total"] = time.perf_counter() - t
    return parts


def main() -> None:
    """Build, push to the registry, run the rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-registry-", dir="/tmp"))
    bench_push.PYCACHE = work / "pycache"
    warm_bytecode()
    try:
        with private_engine() as engine, local_registry(work / "registry") as registry:
            ref = f"{registry}/bench/reg:v1"
            image_id = build_image(engine.host, "bench/reg-src", "v1", seed=5, payload_bytes=args.mib * MIB)
            push_to_registry(engine.host, image_id, f"{registry}/bench/reg", "v1")
            client = docker.APIClient(base_url=engine.host)
            client.remove_image(image_id, force=True)
            image_bytes = args.mib * MIB
            init_prefect_home(work / "prefect-home")
            with prefect_server(work / "server-home") as url:
                extra = {**prefect_env(work / "prefect-home"), "PREFECT_API_URL": url}
                ours: list[float] = []
                theirs: list[float] = []
                for n in range(args.repeat):
                    k = keepdocker_round(work / f"kd-{n}", ref, extra, image_bytes)
                    pulled, a = engine_round(work / f"arv-{n}", ref, engine.host, image_bytes)
                    ours.append(k.seconds)
                    theirs.append(pulled + a.seconds)
                    print(
                        f"  round {n}: keepdocker --from-registry {k.seconds:6.1f} s; docker pull {pulled:5.1f} s "
                        f"+ arv-keepdocker {a.seconds:5.1f} s = {pulled + a.seconds:6.1f} s",
                        flush=True,
                    )
                print(f"  keepdocker flow: {last_push_breakdown(url)}")
            parts = fetch_parts(ref, work)
            print("  fetch parts (in-process): " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
            ratio = statistics.median(ours) / statistics.median(theirs)
            print(
                f"push --from-registry / (docker pull + arv-keepdocker): {statistics.median(ours):.1f} s / "
                f"{statistics.median(theirs):.1f} s = {ratio:.2f} (target <= 1.0)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
