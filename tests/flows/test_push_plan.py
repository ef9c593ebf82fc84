"""plan_push, the core's push decisions, against a real engine and the stand-in: engine, Arvados fallback, archives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from keepdocker.arv.client import ArvadosSession
from keepdocker.engine import DockerEngine
from keepdocker.errors import ImageNotFoundError, UsageError
from keepdocker.images.docker_archive import read_single_image
from keepdocker.push_plan import PushTarget, plan_push
from keepdocker.testing.images import build_image

BIN = Path(sys.executable).parent


@pytest.mark.engine
def test_engine_image_then_the_arvados_copy_once_the_engine_lacks_it(arvados: ArvadosSession, engine_env: str) -> None:
    """A local image is planned from the engine (its graphdriver ID trusted); removed locally, from Arvados."""
    image_id = build_image(engine_env, "kd/plan", "v1", seed=71)
    owner = str(arvados.api.users().current().execute()["uuid"])

    plan = plan_push(arvados, PushTarget("kd/plan:v1"))
    assert (plan.source, plan.engine_id, plan.image_id, plan.repo_tag) == ("engine", image_id, image_id, "kd/plan:v1")
    assert (plan.owner_uuid, plan.in_arvados) == (owner, False)
    by_id = plan_push(arvados, PushTarget(image_id.removeprefix("sha256:")[:12]))
    assert (by_id.source, by_id.image_id, by_id.repo_tag) == ("engine", image_id, None)  # an ID names no tag

    pushed = subprocess.run(
        [str(BIN / "arv-keepdocker"), "kd/plan", "v1"], env=dict(os.environ), capture_output=True, text=True
    )
    assert pushed.returncode == 0, pushed.stderr
    assert plan_push(arvados, PushTarget("kd/plan", "v1")).in_arvados
    docker.DockerClient(base_url=engine_env).images.remove(image_id, force=True)
    fallback = plan_push(arvados, PushTarget("kd/plan", "v1"))
    assert (fallback.source, fallback.image_id, fallback.engine_id, fallback.in_arvados) == (
        "arvados",
        image_id,
        None,
        True,
    )
    with pytest.raises(ImageNotFoundError):  # in neither place
        plan_push(arvados, PushTarget("kd/plan", "v2"))


@pytest.mark.engine
def test_archives_one_image_each(arvados: ArvadosSession, engine_env: str, tmp_path: Path) -> None:
    """A saved archive is planned from its config digest; one holding two images is refused, naming both."""
    first = build_image(engine_env, "kd/plan-a", "1", seed=72)
    second = build_image(engine_env, "kd/plan-b", "1", seed=73)
    with DockerEngine(engine_env) as engine:
        one = engine.save([first], tmp_path / "one.tar").path
        two = engine.save([first, second], tmp_path / "two.tar").path

    plan = plan_push(arvados, PushTarget("kd/plan-a:1", from_archive=str(one)))
    assert (plan.source, plan.archive_format, plan.image_id, plan.engine_id) == ("archive", "docker", first, None)
    assert plan.created is not None and read_single_image(one).id == first
    with pytest.raises(UsageError, match="holds 2 images") as info:
        plan_push(arvados, PushTarget("kd/plan-a:1", from_archive=str(two)))
    assert first in info.value.message and second in info.value.message and "push one per archive" in info.value.message
