"""Benchmark: `keepdocker push` beside `arv-keepdocker` for a ~500 MiB local image, first push and re-push.

Run: ``uv run python benchmarks/bench_push.py [--mib 500] [--modes server,ephemeral]``. Needs root and dockerd (a
private engine is started). Builds one image in the engine, then for each Prefect mode -- ``server`` (a `prefect
server start` of its own, PREFECT_API_URL exported to the push) and ``ephemeral`` (no PREFECT_API_URL) -- pushes it
with each tool to a fresh stand-in of its own, with a fresh HOME and cache, so every first push really saves and
uploads; then pushes again (a re-push finds the image). Wall seconds of the whole command are measured. Prints
seconds, the keepdocker/arv-keepdocker ratios, where keepdocker's time went (task durations read back from the
Prefect server) and the targets: with a server, first push ratio <= 1.0 and no-op re-push ratio <= 2.0 (a re-push of an
image Arvados already holds starts no Prefect flow run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keepdocker.testing.dockerd import private_engine
from keepdocker.testing.images import build_image
from keepdocker.testing.prefect_procs import running_server
from keepdocker.testing.standin import RunningStandin, running_standin

BIN = Path(sys.executable).parent
MIB = 1 << 20
IMAGE, TAG = "bench/push", "v1"


# The process group of the running `prefect server start` (for CPU accounting), or None.
SERVER_PGID: int | None = None

# Extra `keepdocker standin` arguments of every stand-in, e.g. ["--keep-mib-per-second", "100"] for a remote Keep.
STANDIN_ARGS: list[str] = []


@contextmanager
def bench_standin(data_dir: Path) -> Iterator[RunningStandin]:
    """A stand-in subprocess for a benchmark (with STANDIN_ARGS), stopped by PID at the end."""
    with running_standin(data_dir, STANDIN_ARGS) as standin:
        yield standin


def prefect_env(home: Path) -> dict[str, str]:
    """Prefect settings for an isolated home: its own database and result storage, no analytics."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "results"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }


def init_prefect_home(home: Path) -> None:
    """Create the Prefect database of ``home`` (so no timed command pays for its migrations)."""
    env = {**bytecode_env(), **prefect_env(home)}
    env.pop("PREFECT_API_URL", None)
    subprocess.run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=env, check=True,
                   capture_output=True)


@contextmanager
def prefect_server(home: Path, startup_timeout: float = 180.0) -> Iterator[str]:
    """Run `prefect server start` with its own PREFECT_HOME and port; yield its API URL; stop it by PID."""
    global SERVER_PGID
    with running_server(home, env={**os.environ, **bytecode_env()}, startup_timeout=startup_timeout) as server:
        SERVER_PGID = server.pid  # its own session: the group holds the server (for CPU accounting)
        try:
            yield server.api_url
        finally:
            SERVER_PGID = None


def api_post(url: str, path: str, body: dict[str, Any]) -> Any:
    """POST JSON to the Prefect API and decode the answer."""
    req = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _seconds(run: dict[str, Any]) -> float:
    start, end = run.get("start_time"), run.get("end_time")
    if not start or not end:
        return float(run.get("total_run_time") or 0.0)
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def task_runs(url: str, flow_run_id: str) -> list[dict[str, Any]]:
    """Every task run of one flow run (paged: the API returns at most 200 per request)."""
    out: list[dict[str, Any]] = []
    while True:
        page = api_post(url, "/task_runs/filter",
                        {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "offset": len(out)})
        out.extend(page)
        if len(page) < 200:
            return out


@dataclass
class Timed:
    """One timed command: wall seconds and what it printed."""

    seconds: float
    stdout: str
    stderr: str = field(repr=False)
    cpu: float = 0.0  # user + system seconds of the command and its children


def timed(cmd: list[str], env: dict[str, str]) -> Timed:
    """Run ``cmd`` to completion and time it; fail loudly when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(elapsed, proc.stdout.strip(), proc.stderr, cpu)


def group_cpu_seconds(pgid: int) -> float:
    """User + system seconds used so far by the live processes of process group ``pgid`` (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...; utime, stime at 11, 12
            total += int(fields[11]) + int(fields[12])
    return total / tick


# Where compiled bytecode goes (None: as the environment says). This sandbox sets PYTHONDONTWRITEBYTECODE=1, so
# every process would recompile every module it imports (about 3 s for Prefect), which no installed tool pays.
PYCACHE: Path | None = None


def bytecode_env() -> dict[str, str]:
    """The environment with bytecode cached under PYCACHE (outside the venv), when set."""
    env = dict(os.environ)
    if PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def warm_bytecode() -> None:
    """Import what both tools import once, so their bytecode is cached before anything is timed."""
    if PYCACHE is None:
        return
    env = bytecode_env()
    code = "import flows.push, flows.migrate, cli.main, arvados.commands.keepdocker, arvados.commands.put"
    subprocess.run([str(BIN / "python"), "-c", code], env=env, check=True)
    for tool in ("keepdocker", "arv-keepdocker", "prefect"):
        subprocess.run([str(BIN / tool), "--help"], env=env, check=True, capture_output=True)


def tool_env(standin_env: dict[str, str], docker_host: str, home: Path, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment for one tool: fresh HOME and caches, the stand-in's credentials, the engine."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in bytecode_env().items() if not k.startswith(("PREFECT_", "ARVADOS_", "KEEPDOCKER_"))}
    env.update(standin_env)
    env.update({
        "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "KEEPDOCKER_CACHE_DIR": str(home / "kdcache"),
        "DOCKER_HOST": docker_host, **extra,
    })
    return env


@dataclass
class ModeResult:
    """One Prefect mode: per tool, the first-push and re-push seconds of every repeat; keepdocker's breakdown."""

    mode: str
    first: dict[str, list[float]] = field(default_factory=dict)
    again: dict[str, list[float]] = field(default_factory=dict)
    breakdown: str = ""

    def median(self, which: str, tool: str) -> float:
        """The median seconds of ``which`` ("first" or "again") for ``tool``."""
        return statistics.median(getattr(self, which)[tool])


def push_twice(tool: str, mode: str, work: Path, docker_host: str, image_bytes: int, extra: dict[str, str]) -> tuple[
    float, float
]:
    """On a fresh stand-in, HOME and cache: ``tool``'s first push (checked to upload) and re-push, in seconds."""
    with bench_standin(work / "standin") as standin:
        env = tool_env(standin.client_env({}), docker_host, work / "home", extra)
        cmd = [str(BIN / tool), *(["push"] if tool == "keepdocker" else []), IMAGE, TAG]
        before = standin.stats()["requests"]
        first = timed(cmd, env)
        middle = standin.stats()["requests"]
        uploaded = middle.get("keep PUT bytes", 0) - before.get("keep PUT bytes", 0)
        if uploaded < image_bytes * 0.9:
            raise SystemExit(f"{tool}'s first push uploaded only {uploaded} bytes: it did not really upload")
        again = timed(cmd, env)
        after = standin.stats()["requests"]
        if again.stdout != first.stdout:
            raise SystemExit(f"{tool}: re-push printed {again.stdout!r}, first push {first.stdout!r}")
    print(f"  [{mode}] {tool:15} first {first.seconds:6.1f} s ({uploaded / MIB:.0f} MiB to Keep, "
          f"{api_calls(before, middle)} API requests), re-push {again.seconds:5.1f} s "
          f"({api_calls(middle, after)} API requests) -> {first.stdout}", flush=True)
    return first.seconds, again.seconds


def api_calls(before: dict[str, int], after: dict[str, int]) -> int:
    """Arvados API requests (not Keep) the stand-in answered between two snapshots of its counters."""
    return sum(n - before.get(k, 0) for k, n in after.items() if k.startswith("api ") and "injected" not in k)


def push_breakdown(server_url: str, runs_before: int) -> str:
    """Flow and task seconds of the push-image runs since ``runs_before`` (a no-op re-push starts none)."""
    runs = api_post(server_url, "/flow_runs/filter", {
        "flows": {"name": {"any_": ["push-image"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 10,
    })
    new = list(reversed(runs[: max(len(runs) - runs_before, 0)]))
    parts = []
    for label, run in zip(("first push", "re-push"), new, strict=False):
        per = {str(t["name"]).split("-")[0]: round(_seconds(t), 2) for t in task_runs(server_url, run["id"])}
        parts.append(f"{label}: flow {_seconds(run):.1f} s, tasks {per}")
    if len(new) < 2:
        parts.append("re-push: no flow run (answered before Prefect starts)")
    return "; ".join(parts)


def push_run_count(server_url: str) -> int:
    """How many push-image flow runs the server has."""
    return len(api_post(server_url, "/flow_runs/filter", {"flows": {"name": {"any_": ["push-image"]}}, "limit": 200}))


def warm_server(work: Path, docker_host: str, extra: dict[str, str]) -> None:
    """One untimed push of a small image: a new server's first flow run also creates the flow's records and warms
    its database, which a long-running server has long done."""
    build_image(docker_host, "bench/warm", "1", seed=501, payload_bytes=MIB)
    with bench_standin(work / "standin") as standin:
        env = tool_env(standin.client_env({}), docker_host, work / "home", extra)
        took = timed([str(BIN / "keepdocker"), "push", "bench/warm:1"], env)
    print(f"  server warmed by one push of a 1 MiB image ({took.seconds:.1f} s, not counted)", flush=True)


def run_mode(
    mode: str, work: Path, docker_host: str, image_bytes: int, server_url: str | None, repeat: int
) -> ModeResult:
    """``repeat`` rounds of both tools (order alternating per round), each push pair on its own fresh stand-in."""
    extra = prefect_env(work / "prefect-home")
    if server_url:
        extra["PREFECT_API_URL"] = server_url
        warm_server(work / "warm", docker_host, extra)
    result = ModeResult(mode)
    tools = ["keepdocker", "arv-keepdocker"]
    for n in range(repeat):
        for tool in tools if n % 2 == 0 else tools[::-1]:
            before = push_run_count(server_url) if server_url else 0
            first, again = push_twice(tool, mode, work / f"{tool}-{n}", docker_host, image_bytes, extra)
            result.first.setdefault(tool, []).append(first)
            result.again.setdefault(tool, []).append(again)
            if tool == "keepdocker" and server_url:
                result.breakdown = push_breakdown(server_url, before)
    return result


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=500, help="image payload in MiB (default 500)")
    parser.add_argument("--modes", default="server,ephemeral", help="Prefect modes to run (server, ephemeral)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per mode; medians are reported (default 3)")
    parser.add_argument(
        "--keep-mib-per-second", type=float, default=0.0,
        help="put the stand-in's Keep behind one link of this many MiB/s, as a remote cluster (default: unlimited)",
    )
    parser.add_argument(
        "--no-bytecode-cache", action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as set (every command recompiles what it imports)",
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if args.keep_mib_per_second:
        STANDIN_ARGS[:] = ["--keep-mib-per-second", str(args.keep_mib_per_second)]
        print(f"Keep behind one {args.keep_mib_per_second:g} MiB/s link (as a remote cluster), for both tools")
    global PYCACHE
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: list[ModeResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-push-", dir="/tmp") as tmp, private_engine() as engine:
        work = Path(tmp)
        if not args.no_bytecode_cache:
            PYCACHE = work / "pycache"
            warm_bytecode()
        print(f"bytecode: {'cached in ' + str(PYCACHE) if PYCACHE else 'as the environment says'}")
        started = time.perf_counter()
        image_id = build_image(engine.host, IMAGE, TAG, seed=500, payload_bytes=args.mib * MIB)
        built = time.perf_counter() - started
        print(f"built {IMAGE}:{TAG} ({args.mib} MiB payload) = {image_id[:19]} in {built:.0f} s")
        # Warm the page cache once, so neither tool's first `docker save` pays for cold layer reads.
        warm = subprocess.run(
            f"docker save {IMAGE}:{TAG} | wc -c", shell=True, env={**os.environ, "DOCKER_HOST": engine.host},
            capture_output=True, text=True, check=True,
        )
        saved_bytes = int(warm.stdout)
        print(f"docker save size: {saved_bytes / MIB:.0f} MiB")
        for mode in modes:
            mwork = work / mode
            mwork.mkdir()
            init_prefect_home(mwork / "prefect-home")
            if mode == "server":
                with prefect_server(mwork / "prefect-server") as url:
                    results.append(run_mode(mode, mwork, engine.host, saved_bytes, url, args.repeat))
            elif mode == "ephemeral":
                results.append(run_mode(mode, mwork, engine.host, saved_bytes, None, args.repeat))
            else:
                raise SystemExit(f"unknown mode {mode!r}")
    kd, arv = "keepdocker", "arv-keepdocker"
    print()
    print(f"medians of {args.repeat} round(s); wall seconds of the whole command")
    print(f"{'mode':10} {'kd first':>9} {'arv first':>9} {'ratio':>6}   {'kd again':>8} {'arv again':>9} {'ratio':>6}")
    for r in results:
        print(f"{r.mode:10} {r.median('first', kd):8.1f}s {r.median('first', arv):8.1f}s "
              f"{r.median('first', kd) / r.median('first', arv):6.2f}   {r.median('again', kd):7.1f}s "
              f"{r.median('again', arv):8.1f}s {r.median('again', kd) / r.median('again', arv):6.2f}")
    for r in results:
        runs = ", ".join(
            f"{t}: first {[round(x, 1) for x in r.first[t]]}, again {[round(x, 1) for x in r.again[t]]}"
            for t in r.first
        )
        print(f"all runs [{r.mode}] {runs}")
    for r in results:
        if r.breakdown:
            print(f"keepdocker [{r.mode}] last round: {r.breakdown}")
    for r in results:
        if r.mode == "server":
            ratio = r.median("first", kd) / r.median("first", arv)
            noop = r.median("again", kd) / r.median("again", arv)
            print(f"targets (server): first push ratio {ratio:.2f} <= 1.0: {'met' if ratio <= 1.0 else 'MISSED'}; "
                  f"no-op re-push ratio {noop:.2f} <= 2.0: {'met' if noop <= 2.0 else 'MISSED'}")
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
