"""Helpers for the reliability tests: a dedicated Prefect server, CLI subprocesses, and Arvados state snapshots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepdocker.arv.catalog import HASH_LINK, MIGRATION_LINK, REPO_TAG_LINK, keyset
from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.testing.prefect_procs import running_server
from keepdocker.testing.standin import RunningStandin

# The make_standin fixture's type (conftest.py): starts a stand-in with extra `keepdocker standin` flags.
MakeStandin = Callable[..., RunningStandin]

BIN = Path(sys.executable).parent
KEEPDOCKER = str(BIN / "keepdocker")


@dataclass
class PrefectServer:
    """A `prefect server start` subprocess with its own PREFECT_HOME (so its sqlite database can be read)."""

    url: str
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def database(self) -> Path:
        """The server's sqlite file."""
        return self.home / "prefect.db"


@contextmanager
def prefect_server(home: Path, timeout: float = 240.0) -> Iterator[PrefectServer]:
    """Run a Prefect API server on a free port with PREFECT_HOME=``home`` until the block exits."""
    with running_server(home, startup_timeout=timeout) as server:
        yield PrefectServer(url=server.api_url, home=home, process=server.process)


def cli_env(standin: RunningStandin, base: dict[str, str], token: str | None = None) -> dict[str, str]:
    """``base`` plus the stand-in's credentials (optionally another token)."""
    return standin.client_env(base, token=token)


def run_cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `keepdocker ARGS` to completion, capturing text output."""
    return subprocess.run([KEEPDOCKER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def start_cli(*args: str, env: dict[str, str], out_dir: Path) -> subprocess.Popen[bytes]:
    """Start `keepdocker ARGS` in its own session (so it can be SIGKILLed as a group), output to files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "stdout", "wb") as out, open(out_dir / "stderr", "wb") as err:
        return subprocess.Popen([KEEPDOCKER, *args], env=env, stdout=out, stderr=err, start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its session; reap it."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 120.0, interval: float = 0.05) -> float:
    """Poll ``predicate`` until true; return the seconds waited; raise AssertionError on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


def wait_until_idle(standin: RunningStandin, timeout: float = 120.0) -> float:
    """Wait until the stand-in has answered or abandoned every request (those a killed client sent included)."""
    return wait_for("the stand-in's requests in flight", lambda: standin.stats()["in_flight"] == 0, timeout, 0.1)


def admin_session(standin: RunningStandin) -> ArvadosSession:
    """A fresh SDK session with the stand-in's admin token."""
    return connect(ArvadosConfig(standin.env["ARVADOS_API_HOST"], standin.admin_token, insecure=True))


def injected(stats: dict[str, Any]) -> Counter[str]:
    """The injected-fault counters of a /_standin/stats answer."""
    req = stats.get("requests", {})
    return Counter({k: int(v) for k, v in req.items() if "injected" in k})


def catalog_state(session: ArvadosSession) -> dict[str, Any]:
    """Collections and image links, UUIDs replaced by PDHs and owner roles, so two clusters can be compared."""
    colls = keyset(session, "collections", [], select=["uuid", "portable_data_hash", "owner_uuid", "name"])
    pdh_of = {c["uuid"]: c["portable_data_hash"] for c in colls}
    links = keyset(session, "links", [["link_class", "in", [HASH_LINK, REPO_TAG_LINK, MIGRATION_LINK]]])
    me = str(session.api.users().current().execute()["uuid"])

    def owner(uuid: str) -> str:
        return "system" if uuid == session.system_user_uuid else ("admin" if uuid == me else uuid)

    return {
        "collections": sorted((c["portable_data_hash"], owner(c["owner_uuid"]), c["name"]) for c in colls),
        "links": sorted(
            (
                lk["link_class"],
                lk["name"],
                pdh_of.get(lk["head_uuid"], lk["head_uuid"]),
                lk.get("tail_uuid") or "",
                owner(lk["owner_uuid"]),
            )
            for lk in links
        ),
    }


def secret_part(token: str) -> str:
    """The secret of an Arvados token (`v2/<uuid>/<secret>` or a bare secret)."""
    return token.rsplit("/", 1)[-1]


def task_runs_since(api_url: str, since: float) -> list[tuple[str, int, str]]:
    """(task name, run_count, final state name) of every task run of flow runs started after ``since`` (epoch s)."""
    import datetime as dt

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
    from prefect.settings import PREFECT_API_URL, temporary_settings

    after = dt.datetime.fromtimestamp(since, dt.UTC)
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        flow_filter = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=after))  # type: ignore[arg-type]
        runs = []
        while batch := client.read_task_runs(flow_run_filter=flow_filter, limit=200, offset=len(runs)):
            runs.extend(batch)
    return [(r.name or "", r.run_count, r.state.name if r.state else "") for r in runs]


def standin_rows(standin: RunningStandin, table: str, where: str = "1") -> int:
    """Rows of a stand-in table, read straight from its sqlite file (no request, no injected latency)."""
    import sqlite3

    db = sqlite3.connect(f"file:{standin.data_dir / 'standin.sqlite3'}?mode=ro", uri=True, timeout=5)
    try:
        (count,) = db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()
    finally:
        db.close()
    return int(count)
