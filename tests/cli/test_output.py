"""`keepdocker` as people run it: progress on stderr, logs in the UI, quick no-op pushes, one-line failures."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from cli.console import ConsoleProgress
from keepdocker.progress import ProgressEvent, format_event
from keepdocker.testing.images import build_image
from keepdocker.testing.standin import RunningStandin

KEEPDOCKER = str(Path(sys.executable).parent / "keepdocker")
MIB = 1 << 20


def _run(*args: str, env: dict[str, str], timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([KEEPDOCKER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return done, time.monotonic() - started


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flow_runs(api_url: str) -> list[Any]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        from prefect import get_client

        client: SyncPrefectClient
        with get_client(sync_client=True) as client:
            return list(client.read_flow_runs(limit=200))


def _run_logs(api_url: str, flow_run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        from prefect import get_client

        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_console_redraws_on_a_tty_and_prints_plain_lines_otherwise() -> None:
    """On a TTY one line is redrawn (\\r), ended at the step's end; elsewhere lines come every 5 s and at the end."""
    events = [
        ProgressEvent("upload", "sha256:0123", done=n * MIB, total=4 * MIB, rate=2.0 * MIB, finished=n == 4)
        for n in range(1, 5)
    ]
    retry = ProgressEvent("retry", "save-sha256:0123", retry_in=5, reason="the Docker engine went away")
    tty = io.StringIO()
    console = ConsoleProgress(tty, tty=True)
    for e in [*events[:2], retry, *events[2:]]:
        console(e)
    assert tty.getvalue().count("\r\x1b[K") == 5 and tty.getvalue().endswith("4.0 of 4.0 MiB (100%), 2.0 MiB/s done\n")
    assert (
        "\nsave-sha256:0123: retrying in 5 s: the Docker engine went away\n"
        in "\n" + tty.getvalue().split("\r\x1b[K")[3]
    )
    plain = io.StringIO()
    console = ConsoleProgress(plain, tty=False)
    for e in events:
        console(e)
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().splitlines() == [format_event(events[0]), format_event(events[3])]
    assert format_event(events[0]) == "upload sha256:0123: 1.0 of 4.0 MiB (25%), 2.0 MiB/s"


@pytest.mark.engine
def test_push_shows_progress_logs_reach_the_server_and_a_noop_push_skips_prefect(
    cli_env: dict[str, str], docker_host: str, prefect_api: str, standin: RunningStandin
) -> None:
    """Progress of save and upload on stderr; the run's logs on the server; the re-push starts no flow run."""
    image_id = build_image(docker_host, "kd/progress", "1", seed=71, payload_bytes=24 * MIB)
    pushed, _ = _run("push", "kd/progress", "1", env=cli_env)
    assert pushed.returncode == 0, pushed.stderr
    uuid = pushed.stdout.strip()
    # The blocks went to Keep while `docker save` streamed (before Prefect started), once: the upload made only the
    # collection.
    status, record = standin.request("GET", f"/arvados/v1/collections/{uuid}")
    tar_bytes = int(record["manifest_text"].split(" ")[-1].split(":")[1])
    assert status == 200 and standin.stats()["requests"]["keep PUT bytes"] == tar_bytes
    lines = pushed.stderr.splitlines()
    saved = [line for line in lines if line.startswith(f"save {image_id[:19]}: ") and line.endswith(" done")]
    assert len(saved) == 1, lines  # one end per step, even when the tar outgrows the engine's size estimate
    assert any(line.startswith(f"upload {image_id[:19]}: ") and "MiB/s" in line for line in lines), lines
    assert not [line for line in lines if "|" in line or "Traceback" in line], lines  # no Prefect console noise

    (run,) = [r for r in _flow_runs(prefect_api) if "kd/progress" in str(r.parameters)]
    logs = _run_logs(prefect_api, run.id)
    assert any(m.startswith(f"upload {image_id[:19]}: ") for m in logs), logs
    assert any(m.startswith(f"save {image_id[:19]}: ") for m in logs), logs
    assert any(m.endswith("(its blocks were stored in Keep while it was saved)") for m in logs), logs

    before = len(_flow_runs(prefect_api))
    again, seconds = _run("push", "kd/progress:1", env=cli_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == uuid and again.stderr == ""
    assert len(_flow_runs(prefect_api)) == before
    print(f"\nFIGURES no-op push: {seconds:.2f} s")

    quiet, _ = _run("push", "--quiet", "--force", "kd/progress:1", env=cli_env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


@pytest.mark.engine
def test_missing_tag_says_so_and_files_nothing(cli_env: dict[str, str], docker_host: str) -> None:
    """`push ci/hello 9.9` for a tag that does not exist names ci/hello:9.9 in one line; no history is filed."""
    build_image(docker_host, "ci/hello", "1.0", seed=72)
    done, _ = _run("push", "ci/hello", "9.9", env=cli_env)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("keepdocker push: error: no local image ci/hello:9.9 (present: ci/hello:1.0)"), line
    assert "pull it (--pull)" in line and "pull=true" not in line, line  # the hint as this caller types it
    history, _ = _run("history", "ci/hello", env=cli_env)
    assert history.returncode == 1 and history.stdout.strip() == "no history for ci/hello:latest"
    history, _ = _run("history", "ci/hello", "9.9", env=cli_env)
    assert history.returncode == 1 and history.stdout.strip() == "no history for ci/hello:9.9"


def test_unreachable_engine_is_one_line_within_seconds(cli_env: dict[str, str]) -> None:
    """DOCKER_HOST at a closed port: one line naming the engine and what to do, in a few seconds."""
    env = {**cli_env, "DOCKER_HOST": f"tcp://127.0.0.1:{_closed_port()}"}
    done, seconds = _run("push", "kd/anything:1", env=env)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("keepdocker push: error: ") and "the Docker engine at tcp://127.0.0.1:" in line, line
    assert "cannot be reached" in line and "DOCKER_HOST" in line
    assert seconds < 15, seconds
    print(f"\nFIGURES unreachable engine: {seconds:.2f} s: {line}")


def test_unreachable_prefect_api_is_one_line_within_seconds(cli_env: dict[str, str]) -> None:
    """PREFECT_API_URL at a closed port: one line naming the URL and what to do, no traceback, in seconds."""
    env = {**cli_env, "PREFECT_API_URL": f"http://127.0.0.1:{_closed_port()}/api"}
    for args in (("history", "kd/anything:1"), ("migrate", "--dry-run"), ("push", "--force", "kd/anything:1")):
        done, seconds = _run(*args, env=env)
        assert done.returncode in (1, 2), done
        (line,) = done.stderr.splitlines()
        assert "Traceback" not in done.stderr
        assert line.startswith(f"keepdocker {args[0]}: error: cannot reach the Prefect API at "), line
        assert "PREFECT_API_URL" in line
        assert seconds < 15, (args, seconds)


def test_small_steps_are_shown_in_kib() -> None:
    """A step under 1 MiB reads in KiB (not '0.0 of 0.0 MiB'); retries say when and why."""
    small = ProgressEvent("convert", "dc1be34809b5", done=17408, total=17408, rate=40960.0, finished=True)
    assert format_event(small) == "convert dc1be34809b5: 17.0 of 17.0 KiB (100%), 40.0 KiB/s done"
    retry = ProgressEvent("retry", "save-sha256:0123", retry_in=10, reason="the engine went away")
    assert format_event(retry) == "save-sha256:0123: retrying in 10 s: the engine went away"


def test_migrate_shows_download_convert_upload_progress(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`keepdocker migrate` draws download, convert and upload lines on stderr; --quiet draws none."""
    from keepdocker.testing.standin import running_standin

    with running_standin(tmp_path / "samples", ["--sample-v1-images", "2"]) as samples:
        env = samples.client_env(cli_env)
        done, _ = _run("migrate", "--limit", "1", env=env)
        assert done.returncode == 0, done.stderr
        steps = {line.split(" ", 1)[0] for line in done.stderr.splitlines() if line.endswith(" done")}
        assert steps == {"download", "convert", "upload"}, done.stderr
        assert "1 migrated, 0 failed" in done.stdout
        quiet, _ = _run("migrate", "--quiet", env=env)
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
        assert "1 migrated, 0 failed" in quiet.stdout


@pytest.mark.engine
def test_ctrl_c_during_the_background_save_exits_at_once(cli_env: dict[str, str], docker_host: str) -> None:
    """SIGINT while the image is being saved ends the push with 130 at once, not after the save."""
    import signal

    build_image(docker_host, "kd/interrupt", "1", seed=73, payload_bytes=160 * MIB)
    proc = subprocess.Popen(
        [KEEPDOCKER, "push", "kd/interrupt:1"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first progress line: the save has started
    assert first.startswith("save sha256:"), first
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "keepdocker push: interrupted"
    print(f"\nFIGURES exit {time.monotonic() - sent:.2f} s after SIGINT")
    # It did not wait for the save: no finished cache entry (a sidecar is written only after the data is complete).
    assert list(Path(cli_env["KEEPDOCKER_CACHE_DIR"]).glob("*.json")) == []
