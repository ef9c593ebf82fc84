"""Flow parameters are validated before any work, with messages that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.params import MigrateImageRequest, MigrateRequest, PushRequest


def test_push_request_accepts_arv_keepdocker_forms() -> None:
    """repo, repo:tag, registry:port/repo:tag and ID prefixes are accepted."""
    for image in ("busybox", "busybox:1.36", "127.0.0.1:5000/a/b:c", "sha256:abc123"):
        assert PushRequest(image=image).image == image


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"image": "Bad Image"}, "image"),
        ({"image": "upper/Case"}, "image"),
        ({"image": "x", "project_uuid": "not-a-uuid"}, "project_uuid"),
        ({"image": "x:1", "tag": "2"}, "tag"),
        ({"image": "x", "pull": True, "from_archive": "/tmp/x.tar"}, "pull"),
        ({"image": "x", "bogus": 1}, "bogus"),
    ],
)
def test_push_request_rejects_bad_fields(fields: dict[str, object], field_name: str) -> None:
    """Bad names, tags, UUIDs, contradictory or unknown options are refused, naming the field."""
    with pytest.raises(ValidationError) as info:
        PushRequest.model_validate(fields)
    assert field_name in str(info.value)


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -3}, "limit"),
        ({"concurrency": 0}, "concurrency"),
        ({"pdhs": ["nothex+12"]}, "pdhs"),
        ({"strategy": "magic"}, "strategy"),
        ({"project_uuid": "zzzzz-4zz18-aaaaaaaaaaaaaaa"}, "project_uuid"),
    ],
)
def test_migrate_request_rejects_bad_fields(fields: dict[str, object], field_name: str) -> None:
    """Negative limits, bad PDHs, unknown strategies and non-project owners are refused, naming the field."""
    with pytest.raises(ValidationError) as info:
        MigrateRequest.model_validate(fields)
    assert field_name in str(info.value)


def test_migrate_image_request_needs_a_pdh() -> None:
    """The per-image request requires a well-formed PDH."""
    assert MigrateImageRequest(pdh="d41d8cd98f00b204e9800998ecf8427e+0").pdh.endswith("+0")
    with pytest.raises(ValidationError):
        MigrateImageRequest(pdh="zzzzz-4zz18-aaaaaaaaaaaaaaa")
