"""ValidatedFileCache on a real Prefect server: reuse while the file checks out, else re-run; rewrite nothing."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, task

from tasks.policy import ValidatedFileCache
from tasks.results import FileResult

RUNS: list[str] = []


@task(cache_policy=ValidatedFileCache(), result_serializer="json")
def make_file(path: str, text: str) -> FileResult:
    """Write ``text`` to ``path`` and describe the file (counts its runs in RUNS)."""
    RUNS.append(path)
    Path(path).write_text(text)
    return FileResult.of(Path(path))


@flow
def run_once(path: str, text: str) -> str:
    """Call the task once; its final state name (Completed, or Cached when the record was reused)."""
    return str(make_file(path, text, return_state=True).name)


def _records(storage: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in storage.iterdir() if p.is_file()}


def test_record_is_reused_while_the_file_checks_out_and_passed_over_when_not(tmp_path: Path) -> None:
    """Cached while intact; after deletion or an edit the task runs again; existing records are never rewritten."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    storage = Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())
    target = tmp_path / "out.txt"
    RUNS.clear()

    assert run_once(str(target), "one") == "Completed"
    assert run_once(str(target), "one") == "Cached"
    assert len(RUNS) == 1

    target.unlink()
    before = _records(storage)
    assert run_once(str(target), "one") == "Completed"
    assert target.read_text() == "one" and len(RUNS) == 2
    after = _records(storage)
    assert {k: after[k] for k in before} == before  # the stale record was passed over, not rewritten
    assert len(after) == len(before) + 1
    assert run_once(str(target), "one") == "Cached"

    target.write_text("changed")  # another size and mtime: not the file the record describes
    assert run_once(str(target), "one") == "Completed"
    assert target.read_text() == "one" and len(RUNS) == 3
    assert run_once(str(target), "one") == "Cached"
    assert len(RUNS) == 3
    os.utime(target, ns=(0, 0))  # same bytes, other mtime: also re-run
    assert run_once(str(target), "one") == "Completed"
