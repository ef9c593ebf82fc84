"""Pure catalog logic: link preference order, idempotent link planning, names, v1 ID detection."""

from __future__ import annotations

from keepdocker.arv.catalog import HASH_LINK, REPO_TAG_LINK, LinkSpec, collection_name, link_sort_key, missing_links
from keepdocker.arv.migration import is_v1_id


def _link(name: str, ts: str | None, created: str, owner: str = "zzzzz-tpzed-aaaaaaaaaaaaaaa") -> dict[str, object]:
    props = {"image_timestamp": ts} if ts else {}
    return {"name": name, "properties": props, "created_at": created, "owner_uuid": owner}


def test_link_sort_key_prefers_image_timestamp_then_created_at() -> None:
    """Links sort like the API server: newer image_timestamp first, created_at breaks ties, missing ts last."""
    a = _link("a", "2015-01-01T00:00:00Z", "2020-01-01T00:00:00.000000000Z")
    b = _link("b", "2016-01-01T00:00:00Z", "2019-01-01T00:00:00.000000000Z")
    c = _link("c", "2016-01-01T00:00:00Z", "2021-01-01T00:00:00.000000000Z")
    d = _link("d", None, "2022-01-01T00:00:00.000000000Z")
    order = [x["name"] for x in sorted([a, b, c, d], key=link_sort_key, reverse=True)]
    assert order == ["c", "b", "a", "d"]


def test_missing_links_skips_existing_and_duplicates() -> None:
    """Only wanted links with no existing twin (class, name, head, owner, tail) are planned, each once."""
    owner = "zzzzz-j7d0g-ppppppppppppppp"
    want = [
        LinkSpec(HASH_LINK, "sha256:" + "a" * 64, "zzzzz-4zz18-ccccccccccccccc", owner),
        LinkSpec(REPO_TAG_LINK, "x:latest", "zzzzz-4zz18-ccccccccccccccc", owner),
        LinkSpec(REPO_TAG_LINK, "x:latest", "zzzzz-4zz18-ccccccccccccccc", owner),
    ]
    existing = [
        {
            "link_class": HASH_LINK,
            "name": "sha256:" + "a" * 64,
            "head_uuid": "zzzzz-4zz18-ccccccccccccccc",
            "owner_uuid": owner,
            "tail_uuid": None,
        }
    ]
    assert missing_links(want, existing, owner) == [want[1]]


def test_missing_links_default_owner_counts_as_owner() -> None:
    """A wanted link without owner matches an existing link owned by the default owner."""
    spec = LinkSpec(HASH_LINK, "h", "head")
    existing = [{"link_class": HASH_LINK, "name": "h", "head_uuid": "head", "owner_uuid": "me"}]
    assert missing_links([spec], existing, "me") == []
    assert missing_links([spec], existing, "someone-else") == [spec]


def test_collection_name_matches_arv_keepdocker() -> None:
    """Names are `Docker image <repo:tag, / as space> <id[:12]>`, or without the tag part for bare IDs."""
    image_id = "sha256:" + "b" * 64
    assert collection_name(image_id, "reg:5000/a/b:v1") == "Docker image reg:5000 a b:v1 sha256:bbbbb"
    assert collection_name(image_id, None) == "Docker image sha256:bbbbb"


def test_is_v1_id() -> None:
    """v1 IDs are 64 lowercase hex digits without the sha256: prefix."""
    assert is_v1_id("a" * 64)
    assert not is_v1_id("sha256:" + "a" * 64)
    assert not is_v1_id("A" * 64)
    assert not is_v1_id("a" * 63)
