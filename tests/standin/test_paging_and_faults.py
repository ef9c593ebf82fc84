"""arvados.util.keyset_list_all pages exactly over seeded data, and the fault flags inject 503s and latency."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import arvados
import arvados.collection
import arvados.keep
import arvados.util

from keepdocker.standin.server import DataDir
from keepdocker.testing.standin import RunningStandin, running_standin


def _api(standin: RunningStandin, token: str | None = None) -> Any:
    return arvados.api(
        "v1", host=standin.env["ARVADOS_API_HOST"], token=token or standin.admin_token, insecure=True,
        num_retries=0, cache=False,
    )


def test_keyset_list_all_pages_exactly(standin: RunningStandin, isolated_home: Path) -> None:
    """keyset_list_all returns every seeded link and collection once, across several 1000-item pages."""
    status, seeded = standin.request("POST", "/_standin/seed_images", body={"count": 1500})
    assert status == 200, seeded
    api = _api(standin)
    hash_links = list(
        arvados.util.keyset_list_all(api.links().list, filters=[["link_class", "=", "docker_image_hash"]])
    )
    uuids = [link["uuid"] for link in hash_links]
    assert len(uuids) == len(set(uuids)) == 1500
    assert {link["head_uuid"] for link in hash_links} == {s["collection_uuid"] for s in seeded["items"]}
    colls = list(arvados.util.keyset_list_all(api.collections().list, select=["uuid"], order_key="created_at"))
    assert len({c["uuid"] for c in colls}) == len(colls) == 1500
    newest_first = list(arvados.util.keyset_list_all(api.links().list, ascending=False))
    assert len(newest_first) == 3000
    stamps = [link["created_at"] for link in newest_first]
    assert stamps == sorted(stamps, reverse=True)
    page = api.links().list(filters=[["link_class", "=", "docker_image_repo+tag"]], limit=10).execute()
    assert page["items_available"] == 1500 and len(page["items"]) == 10
    last = seeded["items"][-1]
    reader = arvados.collection.CollectionReader(last["collection_uuid"], api_client=api)
    assert reader.portable_data_hash() == last["portable_data_hash"]
    with reader.open(last["image_hash"] + ".tar", "rb") as tar:
        assert tar.read() == b"seeded docker image 1499\n"


def test_seeded_images_are_invisible_to_other_users(standin: RunningStandin, isolated_home: Path) -> None:
    """Images seeded for the admin are not listed for the regular user (visibility by owner)."""
    standin.request("POST", "/_standin/seed_images", body={"count": 20})
    api = _api(standin, standin.user_token)
    assert api.links().list().execute()["items"] == []
    assert api.collections().list().execute()["items_available"] == 0


_INSECURE = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def _status(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=30, context=_INSECURE) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def test_failure_rates_are_roughly_honoured(tmp_path: Path) -> None:
    """--api-failure-rate 0.3 and --keep-failure-rate 0.5 fail about that fraction with 503; discovery never."""
    args = ["--api-failure-rate", "0.3", "--keep-failure-rate", "0.5", "--seed", "7"]
    with running_standin(tmp_path / "faulty", args) as standin:
        api = f"https://{standin.env['ARVADOS_API_HOST']}"
        token = standin.admin_token
        api_codes = [_status(f"{api}/arvados/v1/users/current", token) for _ in range(300)]
        assert set(api_codes) == {200, 503}
        assert 0.2 < api_codes.count(503) / 300 < 0.4
        assert {_status(f"{api}/discovery/v1/apis/arvados/v1/rest", token) for _ in range(30)} == {200}
        keep_codes = [_status(standin.keep_url + "d41d8cd98f00b204e9800998ecf8427e+0", token) for _ in range(300)]
        assert set(keep_codes) == {200, 503}
        assert 0.4 < keep_codes.count(503) / 300 < 0.6


def test_no_faults_by_default_and_latency_flag(standin: RunningStandin, tmp_path: Path) -> None:
    """Without flags nothing fails; --latency-ms 100 delays every request by at least 100 ms."""
    api = f"https://{standin.env['ARVADOS_API_HOST']}/arvados/v1/users/current"
    assert {_status(api, standin.admin_token) for _ in range(50)} == {200}
    with running_standin(tmp_path / "slow", ["--latency-ms", "100"]) as slow:
        url = f"https://{slow.env['ARVADOS_API_HOST']}/arvados/v1/users/current"
        started = time.monotonic()
        assert {_status(url, slow.admin_token) for _ in range(5)} == {200}
        assert time.monotonic() - started >= 0.5


def test_offline_seeding_on_a_stopped_data_dir(tmp_path: Path) -> None:
    """Store.seed_docker_images on a data dir with no server running is served once the stand-in starts."""
    layout = DataDir(tmp_path / "offline")
    store = layout.open_store()
    seeded = store.seed_docker_images(300, blocks=layout.open_blocks(), repo="offline/img")
    store.close()
    with running_standin(layout.root) as standin:
        status, page = standin.request(
            "GET", "/arvados/v1/links", query={"filters": [["name", "=", seeded[7].repo_tag]], "limit": 5}
        )
        assert status == 200 and page["items_available"] == 1
        assert page["items"][0]["head_uuid"] == seeded[7].collection_uuid
        assert standin.stats()["records"]["collections"] == 300


def test_long_list_queries_sent_as_post_override_work(standin: RunningStandin) -> None:
    """A list whose URL exceeds 2048 characters (the SDK then POSTs with X-HTTP-Method-Override: GET) still works."""
    api = _api(standin)
    created = [
        api.collections().create(body={"name": f"c{i}", "manifest_text": ""}).execute()["uuid"] for i in range(3)
    ]
    wanted = created + [f"zzzzz-4zz18-{i:015d}" for i in range(300)]
    found = list(arvados.util.keyset_list_all(api.collections().list, filters=[["uuid", "in", wanted]]))
    assert sorted(c["uuid"] for c in found) == sorted(created)


def test_in_flight_counts_a_request_until_its_client_is_gone(standin: RunningStandin) -> None:
    """A Keep PUT whose body is still coming is in flight; once its client vanishes the count drops back to zero."""
    import socket

    assert standin.stats()["in_flight"] == 0
    host, port = standin.keep_url.split("//")[1].rstrip("/").rsplit(":", 1)
    head = (
        f"PUT /{'0' * 32} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {standin.admin_token}\r\n"
        "Content-Length: 1000000\r\n\r\n"
    )
    client = socket.create_connection((host, int(port)))
    try:
        client.sendall(head.encode() + b"x" * 1000)
        deadline = time.monotonic() + 30
        while standin.stats()["in_flight"] != 1:
            assert time.monotonic() < deadline, "the PUT was never counted"
            time.sleep(0.05)
    finally:
        client.close()
    deadline = time.monotonic() + 30
    while standin.stats()["in_flight"] != 0:
        assert time.monotonic() < deadline, "the abandoned PUT is still counted"
        time.sleep(0.05)


def test_keep_link_limits_puts_and_gets_together(tmp_path: Path, isolated_home: Path) -> None:
    """--keep-mib-per-second 8: two 4 MiB puts in parallel share the link (>= 1 s), and reading one back takes 0.5 s."""
    import concurrent.futures

    with running_standin(tmp_path / "remote", ["--keep-mib-per-second", "8"]) as remote:
        api = arvados.api(
            "v1", host=remote.env["ARVADOS_API_HOST"], token=remote.admin_token, insecure=True, cache=False
        )
        keep = arvados.keep.KeepClient(api_client=api, num_retries=0)
        blocks = [bytes([n]) * (4 << 20) for n in (1, 2)]
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            locators = list(pool.map(lambda b: keep.put(b, copies=1), blocks))
        assert time.monotonic() - started >= 0.95
        started = time.monotonic()
        fresh = arvados.keep.KeepClient(api_client=api, num_retries=0)  # no block cache
        assert fresh.get(locators[0]) == blocks[0]
        assert time.monotonic() - started >= 0.45
