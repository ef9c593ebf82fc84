"""Image reference parsing: the forms docker and arv-keepdocker accept, normalization, and clear usage errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepdocker.errors import UsageError
from keepdocker.references import ImageReference, parse_reference

HEX64 = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4


@pytest.mark.parametrize(
    ("text", "repository", "tag", "repo_tag"),
    [
        ("busybox", "busybox", "latest", "busybox:latest"),
        ("busybox:1.36", "busybox", "1.36", "busybox:1.36"),
        ("me/app:v_2.1-rc", "me/app", "v_2.1-rc", "me/app:v_2.1-rc"),
        ("127.0.0.1:5000/x:y", "127.0.0.1:5000/x", "y", "127.0.0.1:5000/x:y"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x", "latest", "127.0.0.1:5000/x:latest"),
        ("registry.example:443/team/app:1", "registry.example/team/app", "1", "registry.example/team/app:1"),
        ("localhost/app", "localhost/app", "latest", "localhost/app:latest"),
        ("docker.io/library/busybox:1", "busybox", "1", "busybox:1"),
        ("index.docker.io/me/app", "me/app", "latest", "me/app:latest"),
        ("library/busybox", "busybox", "latest", "busybox:latest"),
        ("Registry/app", "Registry/app", "latest", "Registry/app:latest"),
        ("[::1]:5000/app:t", "[::1]:5000/app", "t", "[::1]:5000/app:t"),
    ],
)
def test_names_normalize_to_familiar_form(text: str, repository: str, tag: str, repo_tag: str) -> None:
    """Names parse into Docker's familiar repository, the tag defaults to latest, and :443 is stripped."""
    ref = parse_reference(text)
    assert (ref.repository, ref.tag, ref.repo_tag) == (repository, tag, repo_tag)
    assert ref.digest is None


def test_domain_is_reported_only_for_registries() -> None:
    """The domain property is the registry host:port for registry names and None for Docker Hub names."""
    assert parse_reference("127.0.0.1:5000/x:y").domain == "127.0.0.1:5000"
    assert parse_reference("me/app").domain is None
    assert parse_reference("sha256:abc").domain is None


def test_separate_tag_argument_is_used() -> None:
    """A separate TAG argument, as in `push IMAGE TAG`, becomes the tag."""
    ref = parse_reference("127.0.0.1:5000/x", "v3")
    assert ref.repo_tag == "127.0.0.1:5000/x:v3"
    assert ref.id_prefix is None


def test_tag_given_twice_is_a_usage_error() -> None:
    """A tag in the image and a tag argument together are refused, naming both, as arv-keepdocker does."""
    with pytest.raises(UsageError, match=r"already includes the tag 'a'.*'b'"):
        parse_reference("x:a", "b")


def test_digest_references() -> None:
    """A repository digest is kept, with or without a tag, and such a reference has no repo+tag unless tagged."""
    digest = "sha256:" + HEX64
    ref = parse_reference(f"me/app@{digest}")
    assert (ref.repository, ref.tag, ref.digest, ref.repo_tag) == ("me/app", None, digest, None)
    assert ref.pull_name == f"me/app@{digest}"
    tagged = parse_reference(f"me/app:1@{digest}")
    assert (tagged.tag, tagged.digest, tagged.repo_tag) == ("1", digest, "me/app:1")


def test_id_forms() -> None:
    """sha256:<hex> and 64-hex are ID-only; a short bare hex string is a name and an ID prefix at once."""
    full = parse_reference("sha256:" + HEX64.upper())
    assert full.is_id_only and full.id_prefix == HEX64 and full.repo_tag is None
    assert parse_reference(HEX64) == ImageReference(text=HEX64, id_prefix=HEX64)
    short = parse_reference("sha256:ab12")
    assert short.id_prefix == "ab12" and short.familiar() == "sha256:ab12"
    both = parse_reference("ab12")
    assert (both.repository, both.tag, both.id_prefix) == ("ab12", "latest", "ab12")
    assert parse_reference("ab12:latest").id_prefix is None
    assert parse_reference("ab12", "latest").id_prefix is None


def test_ids_cannot_be_pulled() -> None:
    """Asking for the pull name of an ID reference is a usage error."""
    with pytest.raises(UsageError, match="cannot be pulled"):
        _ = parse_reference("sha256:ab").pull_name


@pytest.mark.parametrize(
    ("text", "tag", "names"),
    [
        ("", None, "empty"),
        ("   ", None, "empty"),
        ("a b", None, "whitespace"),
        ("Busybox", None, r"'Busybox' must be lower-case"),
        ("me/App:1", None, r"'App' must be lower-case"),
        ("x:-bad", None, r"tag '-bad' is invalid"),
        ("x", ".bad", r"tag '\.bad' is invalid"),
        ("x:" + "t" * 129, None, "is invalid"),
        ("me//app", None, "empty path component"),
        ("me/app/", None, "empty path component"),
        ("reg.example/", None, "no repository path"),
        ("bad_host.example:5000/app", None, "registry 'bad_host.example:5000'"),
        ("a--/b", None, r"component 'a--' is invalid"),
        ("x@sha256:abc", None, "digest 'sha256:abc' is invalid"),
        ("x@sha256:" + "A" * 64, None, "lower-case hex"),
        ("sha256:xyz", None, "1 to 64 hexadecimal"),
        ("sha256:" + "a" * 65, None, "1 to 64 hexadecimal"),
        ("sha256:abc", "t", "cannot take the tag argument"),
        (HEX64 + ":t", None, "64-hex string is an image ID"),
        ("a" * 250 + "/" + "b" * 10, None, "longer than 255"),
        (":t", None, "no repository name"),
    ],
)
def test_bad_references_name_the_bad_part(text: str, tag: str | None, names: str) -> None:
    """Each malformed reference raises UsageError whose message names the offending part."""
    with pytest.raises(UsageError, match=names):
        parse_reference(text, tag)


_component = st.from_regex(r"[a-z0-9]{1,6}(?:[_-][a-z0-9]{1,6}){0,2}", fullmatch=True)
_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)


@given(
    domain=st.sampled_from(["", "127.0.0.1:5000/", "reg.example/", "reg.example:443/", "localhost:1/"]),
    path=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tags,
)
def test_familiar_form_is_a_fixed_point(domain: str, path: list[str], tag: str | None) -> None:
    """Parsing the familiar form of any valid reference gives the same repository, tag and digest back."""
    text = domain + "/".join(path) + (f":{tag}" if tag else "")
    ref = parse_reference(text)
    again = parse_reference(ref.familiar())
    assert (again.repository, again.tag, again.digest) == (ref.repository, ref.tag, ref.digest)
    assert ":443/" not in ref.familiar()
