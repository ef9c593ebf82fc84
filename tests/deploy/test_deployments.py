"""End to end with real processes: a Prefect server, the deployments, two process workers, the stand-in, an engine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from keepdocker.arv.catalog import HASH_LINK, MIGRATION_LINK, REPO_TAG_LINK, keyset
from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.testing.images import build_image, rootfs_tar
from keepdocker.testing.oldcluster import SeededImage, seed_v1_image
from keepdocker.testing.prefect_procs import PrefectProcess, client_env, run_prefect, start_server, start_worker
from keepdocker.testing.registry import local_registry, put_image
from keepdocker.testing.resolution import resolve_image
from keepdocker.testing.standin import RunningStandin
from keepdocker.testing.v1archives import ATTACKS, random_v1_archive

pytestmark = [pytest.mark.slow, pytest.mark.engine]

REPO_ROOT = Path(__file__).resolve().parents[2]
POOL = "keepdocker"
WATCH = ["--watch", "--watch-timeout", "420"]
CREDENTIALS_BLOCK = "arvados-e2e"
KEEPDOCKER = str(Path(sys.executable).parent / "keepdocker")


@dataclass
class Stack:
    """Everything the module started, and how to reach it."""

    root: Path
    server: PrefectProcess
    workers: list[PrefectProcess]
    standin: RunningStandin
    session: ArvadosSession
    docker_host: str
    cli_env: dict[str, str]
    cache_dir: Path
    seeds: list[int] = field(default_factory=lambda: [300])

    def run(self, deployment: str, params: dict[str, Any] | None = None, *extra: str) -> tuple[int, str, str]:
        """`prefect deployment run DEPLOYMENT [--param KEY=JSON ...] --watch`: (exit code, output, flow run ID)."""
        args = ["deployment", "run", deployment, *WATCH, *extra]
        for key, value in (params or {}).items():
            args += ["--param", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
        done = run_prefect(args, self.cli_env, cwd=self.root, timeout=600)
        output = done.stdout + done.stderr
        found = re.search(r"UUID: ([0-9a-f-]{36})", output)
        return done.returncode, output, found.group(1) if found else ""

    def seed(self, count: int, prefix: str) -> list[SeededImage]:
        """Seed ``count`` distinct v1 images tagged ``<prefix>/imgN:1`` as an old cluster stored them."""
        images = []
        for n in range(count):
            self.seeds[0] += 1
            generated = random_v1_archive(self.seeds[0], layers=2, repositories=n % 2 == 0)
            path = generated.write(self.root / f"seed-{self.seeds[0]}.tar")
            images.append(seed_v1_image(self.session, path, generated.leaves[0], (f"{prefix}/img{n}:1",)))
        return images


@contextmanager
def prefect_api(url: str) -> Iterator[None]:
    """This process's Prefect client pointed at the e2e server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        yield


def _stopped(proc: PrefectProcess) -> AbstractContextManager[None]:
    @contextmanager
    def stop() -> Iterator[None]:
        try:
            yield
        finally:
            proc.stop()

    return stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Stack]:
    """A fresh server (SQLite, own PREFECT_HOME, free port), the pool, `prefect deploy`, two workers, the stand-in.

    Everything is stopped by PID at the end, whatever happened: workers first, then the server, then the stand-in.
    """
    root = tmp_path_factory.mktemp("e2e")
    timings: dict[str, float] = {}
    with ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        home = root / "home"
        home.mkdir()
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        mp.delenv("KEEPDOCKER_CACHE_DIR", raising=False)

        standin = RunningStandin(data_dir=root / "standin", extra_args=[])
        standin.start()
        stack.callback(standin.stop)

        t = time.monotonic()
        server = start_server(root / "server-home", scheduler=False)
        stack.enter_context(_stopped(server))
        timings["server"] = time.monotonic() - t

        cli_env = client_env(root / "client-home", server.api_url)
        t = time.monotonic()
        pool = run_prefect(["work-pool", "create", POOL, "--type", "process", "--overwrite"], cli_env)
        assert pool.returncode == 0, pool.stdout + pool.stderr
        timings["pool"] = time.monotonic() - t

        cache_dir = root / "cache"
        deploy_env = dict(cli_env, KEEPDOCKER_CACHE_DIR=str(cache_dir), KEEPDOCKER_NIGHTLY_TIMEZONE="Europe/Berlin")
        t = time.monotonic()
        deployed = run_prefect(
            ["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], deploy_env, cwd=REPO_ROOT
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        timings["deploy"] = time.monotonic() - t

        # What flow runs inherit: the stand-in's credentials, the engine, a private HOME, and a cache directory
        # the deployment's job variables must override.
        worker_env = standin.client_env(client_env(root / "worker-home", server.api_url))
        worker_env.update(
            {
                "DOCKER_HOST": docker_host,
                "HOME": str(home),
                "XDG_CACHE_HOME": str(home / ".cache"),
                "KEEPDOCKER_CACHE_DIR": str(root / "worker-default-cache"),
                "KEEPDOCKER_RETRY_DELAY": "0.2",
            }
        )
        workers = []
        t = time.monotonic()
        for name in ("w1", "w2"):
            worker = start_worker(POOL, name, worker_env, log=root / f"{name}.log", cwd=REPO_ROOT, limit=2)
            stack.enter_context(_stopped(worker))  # stopped before the server (ExitStack unwinds in reverse)
            workers.append(worker)
        timings["workers"] = time.monotonic() - t

        session = connect(ArvadosConfig.from_env(standin.client_env({})))
        print("startup seconds:", {k: round(v, 1) for k, v in timings.items()}, file=sys.stderr)
        yield Stack(
            root=root,
            server=server,
            workers=workers,
            standin=standin,
            session=session,
            docker_host=docker_host,
            cli_env=cli_env,
            cache_dir=cache_dir,
        )
    for proc in [server, *workers]:
        assert proc.process.poll() is not None, f"{proc.name} (PID {proc.pid}) still running"


def _migrations(session: ArvadosSession, pdh: str) -> list[dict[str, Any]]:
    return keyset(session, "links", [["link_class", "=", MIGRATION_LINK], ["tail_uuid", "=", pdh]])


def _counts(session: ArvadosSession) -> tuple[int, int]:
    return len(keyset(session, "collections", [])), len(keyset(session, "links", []))


def _history(stack: Stack, image: str) -> list[dict[str, Any]]:
    from tasks.history import read_history

    with prefect_api(stack.server.api_url):
        return read_history(image)


def _flow_run_state(stack: Stack, flow_run_id: str) -> Any:
    from prefect import get_client

    with prefect_api(stack.server.api_url), get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id)).state


def _keepdocker(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KEEPDOCKER, *args], env=stack.cli_env, capture_output=True, text=True, timeout=600)


def _task_states(stack: Stack, flow_run_id: str) -> dict[str, str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_api(stack.server.api_url), get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return {run.name: run.state.name for run in runs if run.state is not None}


def test_deployments_carry_schedule_limits_forms_and_environment(stack: Stack) -> None:
    """nightly: 02:00 cron, limit 1; ci: no limit; flat forms; env baked in; the credentials block type registered."""
    from prefect import get_client

    names = [
        "migrate-images/nightly",
        "migrate-images/adhoc",
        "migrate-image/fanout",
        "push-image/adhoc",
        "push-image/ci",
    ]
    with prefect_api(stack.server.api_url), get_client(sync_client=True) as client:
        deps = {name: client.read_deployment_by_name(name) for name in names}
        # The deploy's register-blocks step made the credentials block type known to the server (and the UI).
        block_type = client.read_block_type_by_slug("arvados-credentials")
    assert block_type.name == "Arvados Credentials"
    nightly = deps["migrate-images/nightly"]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [  # type: ignore[union-attr]
        ("0 2 * * *", "Europe/Berlin", True)
    ]
    assert nightly.global_concurrency_limit is not None and nightly.global_concurrency_limit.limit == 1
    assert nightly.concurrency_options is not None and nightly.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert nightly.parameters == {
        "dry_run": False,
        "concurrency": 2,
        "strategy": "native",
        "verify": False,
        "fan_out": False,
    }
    assert deps["migrate-images/adhoc"].parameters == {"dry_run": True}
    assert deps["push-image/ci"].global_concurrency_limit is None
    assert not deps["push-image/ci"].schedules and not deps["migrate-images/adhoc"].schedules

    migrate_form = deps["migrate-images/adhoc"].parameter_openapi_schema
    assert migrate_form["properties"]["concurrency"]["maximum"] == 32
    assert migrate_form["properties"]["dry_run"]["title"] == "Dry run"
    assert migrate_form["properties"]["dry_run"]["description"]
    push_form = deps["push-image/adhoc"].parameter_openapi_schema
    assert push_form["properties"]["image"]["maxLength"] == 512
    assert push_form["properties"]["project_uuid"]["title"] == "Owner project"
    assert push_form["properties"]["platform"]["default"] == "linux/amd64"
    assert not migrate_form.get("definitions") and not push_form.get("definitions")
    for name, dep in deps.items():
        assert dep.enforce_parameter_schema, name
        assert dep.work_pool_name == POOL, name
        assert dep.pull_steps == [{"flows.deploy_steps.enter_checkout": {}}], name
        assert dep.job_variables == {
            "env": {
                "KEEPDOCKER_CACHE_DIR": str(stack.cache_dir),
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(stack.cache_dir / "prefect-results"),
            }
        }, name
        assert "{{" not in dep.model_dump_json(), name


def test_adhoc_dry_run_exits_0_and_writes_nothing(stack: Stack) -> None:
    """`--param dry_run=true` is accepted; overriding only concurrency keeps the adhoc default: still a dry run."""
    stack.seed(1, "dry")
    before = _counts(stack.session)
    code, out, _ = stack.run("migrate-images/adhoc", {"dry_run": "true"})
    assert code == 0, out
    assert "Completed" in out
    code, out, run_id = stack.run("migrate-images/adhoc", {"concurrency": "1"})
    assert code == 0, out
    assert _counts(stack.session) == before
    state = _flow_run_state(stack, run_id)
    assert state.name == "Completed"
    assert state.message is not None and state.message.startswith("dry run: ")


def test_nightly_sweep_migrates_seeded_images(stack: Stack) -> None:
    """The nightly deployment with its default parameters migrates every v1 image (exit 0); history shows the run."""
    images = stack.seed(2, "night")
    code, out, run_id = stack.run("migrate-images/nightly")
    assert code == 0, out
    for img in images:
        (migration,) = _migrations(stack.session, img.collection.pdh)
        assert resolve_image(stack.session, img.repo_tags[0], ("v2",)) == migration["head_uuid"]
        rows = _history(stack, img.repo_tags[0])
        assert [(r["action"], r["outcome"]) for r in rows] == [("migrate", "migrated")]
        assert run_id in rows[0]["flow_run"] and rows[0]["flow"] == "migrate-images"
    # Task cache records went to the deployment's results path, not the worker's default.
    assert any((stack.cache_dir / "prefect-results").iterdir())
    assert not (stack.root / "worker-default-cache").exists()


def test_sweep_with_a_corrupt_image_exits_1_and_migrates_the_others(stack: Stack) -> None:
    """One malicious v1 tar fails its image and the run (exit 1); the other images are migrated."""
    good = stack.seed(2, "mixed")
    attack = ATTACKS["outer_dotdot_name"]()
    bad_path = stack.root / "evil.tar"
    bad_path.write_bytes(attack.data)
    bad = seed_v1_image(stack.session, bad_path, "e" * 64, ("evil/image:1",))
    pdhs = [i.collection.pdh for i in [*good, bad]]
    code, out, _ = stack.run("migrate-images/nightly", {"pdhs": pdhs})
    assert code == 1, out
    assert "Failed" in out and "Cancelled" not in out
    for img in good:
        assert len(_migrations(stack.session, img.collection.pdh)) == 1
    assert _migrations(stack.session, bad.collection.pdh) == []
    (row,) = _history(stack, "evil/image:1")
    assert row["outcome"] == "failed" and attack.rule in row["reason"]

    # A rerun (another flow run, maybe on the other worker) reads the old tar from Keep again, in place (the native
    # path keeps no local copy to reuse), and refuses it the same way without a retry: the refusal is permanent.
    code, out, rerun_id = stack.run("migrate-images/nightly", {"pdhs": [bad.collection.pdh]})
    assert code == 1, out
    assert [r["outcome"] for r in _history(stack, "evil/image:1")] == ["failed", "failed"]
    states = _task_states(stack, rerun_id)
    assert states[f"in-place-{bad.collection.pdh}"] == "Failed", states
    assert not any(name.startswith("download-") for name in states), states


def test_ci_push_exits_0_and_a_missing_image_exits_1(stack: Stack) -> None:
    """push-image/ci pushes an engine image (exit 0), a missing image exits 1 and files no history."""
    image_id = build_image(stack.docker_host, "kd/e2e-ci", "1", seed=61)
    # prefect's --param reads values as JSON: a tag that looks like a number is given as a JSON string.
    code, out, run_id = stack.run("push-image/ci", {"image": "kd/e2e-ci", "tag": '"1"'})
    assert code == 0, out
    (tag_link,) = keyset(stack.session, "links", [["link_class", "=", REPO_TAG_LINK], ["name", "=", "kd/e2e-ci:1"]])
    (hash_link,) = keyset(stack.session, "links", [["link_class", "=", HASH_LINK], ["name", "=", image_id]])
    assert tag_link["head_uuid"] == hash_link["head_uuid"]

    code, out, _ = stack.run("push-image/ci", {"image": "kd/e2e-missing:0"})
    assert code == 1, out
    assert "Failed" in out

    env = dict(stack.cli_env)
    history = subprocess.run(
        [str(Path(sys.executable).parent / "keepdocker"), "history", "kd/e2e-ci:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert history.returncode == 0, history.stderr
    assert run_id in history.stdout and "uploaded" in history.stdout
    assert _history(stack, "kd/e2e-missing:0") == []


def test_ci_push_from_a_registry_needs_no_engine(stack: Stack, tmp_path: Path) -> None:
    """push-image/ci with from_registry runs on a worker whose DOCKER_HOST points at nothing, and exits 0."""
    with local_registry(tmp_path / "registry") as registry:
        _, image_id, _ = put_image(registry, "kd/e2e-reg", "1", [rootfs_tar(63, busybox=False)])
        no_engine = json.dumps({"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
        params = {"image": f"{registry}/kd/e2e-reg:1", "from_registry": True}
        code, out, _ = stack.run("push-image/ci", params, "--job-variable", f"env={no_engine}")
    assert code == 0, out
    (hash_link,) = keyset(stack.session, "links", [["link_class", "=", HASH_LINK], ["name", "=", image_id]])
    assert hash_link["head_uuid"]


def test_ci_gets_the_answer_from_keepdocker_deployment_run(stack: Stack) -> None:
    """deployment-run prints the collection UUID (exit 0), or one line with the reason in parameter form (exit 1)."""
    build_image(stack.docker_host, "kd/e2e-answer", "1", seed=63)
    done = _keepdocker(stack, "deployment-run", "push-image/ci", "--param", "image=kd/e2e-answer", "--param", "tag=1")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    uuid = line.split()[0]
    (tag_link,) = keyset(stack.session, "links", [["link_class", "=", REPO_TAG_LINK], ["name", "=", "kd/e2e-answer:1"]])
    assert tag_link["head_uuid"] == uuid and line == f"{uuid} uploaded: kd/e2e-answer:1 ({tag_link_pdh(stack, uuid)})"

    done = _keepdocker(stack, "deployment-run", "push-image/ci", "--param", "image=kd/e2e-answer:9.9")
    assert done.returncode == 1, done.stderr
    (reason,) = [line for line in done.stderr.splitlines() if "error" in line]
    assert reason.startswith("keepdocker deployment-run: error: flow run ")
    assert "Failed: no local image kd/e2e-answer:9.9 " in reason and "(pull=true)" in reason
    assert "--pull" not in reason and done.stdout == ""

    done = _keepdocker(stack, "deployment-run", "migrate-images/adhoc", "--param", "concurrency=99")
    assert done.returncode == 2 and "concurrency" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    done = _keepdocker(stack, "deployment-run", "push-image/nope", "--param", "image=x")
    assert done.returncode == 2 and "no deployment 'push-image/nope'" in done.stderr, done.stderr


def tag_link_pdh(stack: Stack, uuid: str) -> str:
    """The portable data hash of a collection."""
    return str(stack.session.api.collections().get(uuid=uuid).execute()["portable_data_hash"])


def test_credentials_from_an_arvados_credentials_block(stack: Stack) -> None:
    """With credentials_block the flow uses the typed block, even when the worker's own token is wrong."""
    creds = stack.standin.client_env({})
    register = run_prefect(["block", "register", "-m", "tasks.credentials"], stack.cli_env, cwd=REPO_ROOT)
    assert register.returncode == 0, register.stdout + register.stderr
    from tasks.credentials import ArvadosCredentials

    with prefect_api(stack.server.api_url):
        ArvadosCredentials(
            host=creds["ARVADOS_API_HOST"],
            token=creds["ARVADOS_API_TOKEN"],  # type: ignore[arg-type]
            insecure=creds.get("ARVADOS_API_HOST_INSECURE", "") in ("1", "true"),
        ).save(CREDENTIALS_BLOCK, overwrite=True)
    image_id = build_image(stack.docker_host, "kd/e2e-secret", "1", seed=62)
    bad_env = json.dumps({"ARVADOS_API_TOKEN": "v2/zzzzz-gj3su-000000000000000/not-the-token"})
    params = {"image": "kd/e2e-secret:1", "credentials_block": CREDENTIALS_BLOCK}
    code, out, _ = stack.run("push-image/ci", params, "--job-variable", f"env={bad_env}")
    assert code == 0, out
    rows = _history(stack, "kd/e2e-secret:1")
    assert rows[0]["outcome"] == "uploaded" and rows[0]["image_id"] == image_id

    code, out, run_id = stack.run("push-image/ci", {"image": "kd/e2e-secret:1", "credentials_block": "no-such-block"})
    assert code == 1, out
    message = _flow_run_state(stack, run_id).message
    assert message.startswith("arvados-credentials block 'no-such-block' not found"), message


def test_two_workers_share_a_fanned_out_sweep(stack: Stack) -> None:
    """fan_out=true runs one migrate-image/fanout flow run per image; both workers take some; each image once."""
    images = stack.seed(6, "fan")
    collections_before = len(keyset(stack.session, "collections", []))
    params = {"dry_run": False, "fan_out": True, "concurrency": 4, "pdhs": [i.collection.pdh for i in images]}
    code, out, parent_id = stack.run("migrate-images/adhoc", params)
    assert code == 0, out

    for img in images:
        (migration,) = _migrations(stack.session, img.collection.pdh)
        assert resolve_image(stack.session, img.repo_tags[0], ("v2",)) == migration["head_uuid"]
        rows = _history(stack, img.repo_tags[0])
        assert [(r["flow"], r["outcome"]) for r in rows] == [("migrate-image", "migrated")]
    assert len(keyset(stack.session, "collections", [])) == collections_before + len(images)

    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with prefect_api(stack.server.api_url), get_client(sync_client=True) as client:
        fanout = client.read_deployment_by_name("migrate-image/fanout")
        children = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[fanout.id])), limit=200
        )
        parents = {
            str(client.read_task_run(c.parent_task_run_id).flow_run_id) for c in children if c.parent_task_run_id
        }
    assert parents == {parent_id}
    assert len(children) == len(images)
    assert all(c.state is not None and c.state.is_completed() for c in children)
    by_worker: dict[str, int] = {}
    for child in children:
        worker = str(child.labels.get("prefect.worker.name"))
        by_worker[worker] = by_worker.get(worker, 0) + 1
    assert sorted(by_worker) == ["w1", "w2"], by_worker


def test_tokens_never_leak(stack: Stack) -> None:
    """No token in any flow run's parameters or state, any log, any artifact, the workers' output or saved results."""
    from prefect import get_client

    tokens = [stack.standin.admin_token, stack.standin.user_token]
    secrets = [t for tok in tokens for t in {tok, tok.rsplit("/", 1)[-1]}]
    texts: list[tuple[str, str]] = []
    with prefect_api(stack.server.api_url), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        assert len(runs) >= 8
        texts.extend((f"flow run {run.name}", run.model_dump_json()) for run in runs)
        offset = 0
        while task_runs := client.read_task_runs(limit=200, offset=offset):
            texts.extend((f"task run {t.name}", t.model_dump_json()) for t in task_runs)
            offset += len(task_runs)
        offset = 0
        while batch := client.read_logs(limit=200, offset=offset):
            texts.extend((f"log {log.id}", log.message) for log in batch)
            offset += len(batch)
        offset = 0
        while artifacts := client.read_artifacts(limit=200, offset=offset):
            texts.extend((f"artifact {a.key}", a.model_dump_json()) for a in artifacts)
            offset += len(artifacts)
    texts.extend((w.name, w.log_tail(10**8)) for w in stack.workers)
    for path in (stack.cache_dir / "prefect-results").rglob("*"):
        if path.is_file():
            texts.append((str(path), path.read_bytes().decode(errors="replace")))
    assert len(texts) > 50
    # The scan reads what it should: logs name the admin user, artifacts the seeded tags, results the cached tars.
    admin_uuid = str(stack.session.api.users().current().execute()["uuid"])
    assert any(where.startswith("log ") and admin_uuid in text for where, text in texts)
    assert any(where.startswith("artifact ") and "fan/img0:1" in text for where, text in texts)
    assert any("prefect-results" in where and "keep-" in text for where, text in texts)
    leaks = [where for where, text in texts for secret in secrets if secret in text]
    assert leaks == []
