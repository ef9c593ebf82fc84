"""Requests are validated before any work, naming the option as the caller spells it; flow forms are plain fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keepdocker.errors import UsageError
from keepdocker.options import use_cli_spelling
from keepdocker.requests import MigrateImageRequest, MigrateRequest, PushRequest


@pytest.fixture()
def cli_spelling() -> Iterator[None]:
    """Messages name CLI flags for the duration of a test."""
    use_cli_spelling()
    try:
        yield
    finally:
        use_cli_spelling(False)


def test_push_request_accepts_arv_keepdocker_forms() -> None:
    """repo, repo:tag, registry:port/repo:tag and ID prefixes are accepted."""
    for image in ("busybox", "busybox:1.36", "127.0.0.1:5000/a/b:c", "sha256:abc123"):
        assert PushRequest(image=image).image == image


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image": "Bad Image"}, "image: "),
        ({"image": "upper/Case"}, "image: "),
        ({"image": "x", "project_uuid": "not-a-uuid"}, "project_uuid: 'not-a-uuid' is not a project"),
        ({"image": "x:1", "tag": "2"}, "tag: "),
        ({"image": "x", "pull": True, "from_archive": "/tmp/x.tar"}, "pull=true and from_archive exclude each other"),
        ({"image": "x", "name": ""}, "name: "),
        ({"image": "x", "credentials_block": "Bad Name"}, "credentials_block: "),
        ({}, "image: give the image to push .it may be left out only with from_archive."),
        ({"image": "x", "from_registry": True, "pull": True}, "from_registry=true excludes pull and from_archive"),
        ({"image": "x", "platform": "linux/arm64"}, "platform, allow_http and registry_ca apply to from_registry=true"),
        ({"image": "sha256:abc", "from_registry": True}, "image: from_registry=true needs repository"),
    ],
)
def test_push_request_rejects_bad_fields(fields: dict[str, Any], message: str) -> None:
    """Bad names, tags, UUIDs and contradictory options are refused, naming the parameter."""
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        PushRequest(**fields)


@pytest.mark.usefixtures("cli_spelling")
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image": "Bad Image"}, "IMAGE: "),
        ({"image": "x:1", "tag": "2"}, "TAG: "),
        ({"image": "x", "project_uuid": "nope"}, "--project-uuid: 'nope'"),
        ({"image": "x", "pull": True, "from_archive": "/tmp/x.tar"}, "--pull and --from-archive exclude each other"),
        ({"image": "x", "platform": "linux/arm64"}, "--platform, --allow-http and --registry-ca apply to --from-reg"),
    ],
)
def test_cli_callers_see_flags(fields: dict[str, Any], message: str) -> None:
    """Under the CLI's spelling the same refusals name --flags and IMAGE/TAG, as the user typed them."""
    with pytest.raises(UsageError, match=message):
        PushRequest(**fields)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -3}, "limit"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 33}, "concurrency"),
        ({"pdhs": ("nothex+12",)}, "pdhs"),
        ({"strategy": "magic"}, "strategy"),
        ({"project_uuid": "zzzzz-4zz18-aaaaaaaaaaaaaaa"}, "project_uuid"),
    ],
)
def test_migrate_request_rejects_bad_fields(fields: dict[str, Any], field_name: str) -> None:
    """Non-positive limits, bad PDHs, unknown strategies and non-project owners are refused, naming the field."""
    with pytest.raises(UsageError, match=f"^{field_name}: "):
        MigrateRequest(**fields)


def test_migrate_image_request_needs_a_pdh() -> None:
    """The per-image request requires a well-formed PDH."""
    assert MigrateImageRequest(pdh="d41d8cd98f00b204e9800998ecf8427e+0").pdh.endswith("+0")
    with pytest.raises(UsageError, match=r"^pdh: "):
        MigrateImageRequest(pdh="zzzzz-4zz18-aaaaaaaaaaaaaaa")


def _schema(flow_fn: Any) -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(flow_fn).model_dump_for_openapi()


def test_flow_forms_are_flat_plain_fields() -> None:
    """Every flow parameter is a top-level field with a readable title, a description and its bounds; no nulls."""
    from flows.migrate import migrate_image, migrate_images
    from flows.push import push_image

    push, sweep, one = _schema(push_image), _schema(migrate_images), _schema(migrate_image)
    assert list(push["properties"]) == [
        "image",
        "tag",
        "project_uuid",
        "name",
        "force",
        "pull",
        "force_image_format",
        "from_archive",
        "from_registry",
        "platform",
        "allow_http",
        "registry_ca",
        "credentials_block",
    ]
    assert "required" not in push and "required" not in sweep and one["required"] == ["pdh"]
    for schema in (push, sweep, one):
        assert schema["definitions"] == {}
        for name, prop in schema["properties"].items():
            assert prop["title"][0].isupper() and "_" not in prop["title"] and prop["title"] != name, (name, prop)
            assert len(prop["description"]) > 20, name
            assert prop["type"] in ("string", "boolean", "integer", "array"), (name, prop)
            assert "anyOf" not in prop and prop.get("default", "") is not None, (name, prop)
    props = sweep["properties"]
    assert (props["concurrency"]["minimum"], props["concurrency"]["maximum"], props["concurrency"]["default"]) == (
        1,
        32,
        2,
    )
    assert (props["limit"]["minimum"], props["limit"]["default"]) == (0, 0)
    assert props["pdhs"]["items"]["pattern"] and props["strategy"]["enum"] == ["native", "engine"]
    assert props["project_uuid"]["title"] == "Project" and props["pdhs"]["title"] == "Only these old PDHs"
    assert push["properties"]["image"]["maxLength"] == 512
    assert push["properties"]["credentials_block"]["default"] == ""


def test_an_in_process_cli_run_leaves_the_parameter_spelling(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`cli.main.run` names flags while it runs, then gives the process back its own spelling (tests, embedders)."""
    from cli.main import run
    from keepdocker.options import uses_cli_spelling

    assert run(["upgrade", str(tmp_path / "missing.tar"), str(tmp_path / "out.tar")]) == 2
    assert "keepdocker upgrade: error:" in capsys.readouterr().err
    assert not uses_cli_spelling()
    with pytest.raises(UsageError, match=r"^pull=true and from_archive"):
        PushRequest(image="ok", pull=True, from_archive="/x.tar")
