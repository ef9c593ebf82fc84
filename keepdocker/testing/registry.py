"""Run Debian's docker-registry on loopback for tests that push and pull images (no internet registry needed).

Besides the plain registry: htpasswd basic auth (``htpasswd`` from apache2-utils writes the bcrypt line), TLS with a
self-signed CA, and ``put_image`` / ``put_index`` that upload hand-made images and multi-platform indexes over the
distribution API (no engine needed, so any architecture can be faked).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker

__all__ = [
    "flaky_front",
    "free_port",
    "local_registry",
    "push_to_registry",
    "put_image",
    "put_index",
    "token_registry",
    "write_htpasswd",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_htpasswd(path: Path, user: str, password: str) -> Path:
    """An htpasswd file with one bcrypt entry (docker-registry accepts only bcrypt), written by apache2-utils."""
    binary = shutil.which("htpasswd")
    if binary is None:
        raise RuntimeError("htpasswd is not installed: apt-get install -y apache2-utils")
    line = subprocess.run(
        [binary, "-niB", user], input=password, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    path.write_text(line)
    return path


@contextmanager
def local_registry(
    root: Path,
    startup_timeout: float = 20.0,
    *,
    htpasswd: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    token: tuple[str, Path] | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """A registry on 127.0.0.1:<free port> storing under ``root``; yields ``host:port`` (dockerd trusts loopback).

    ``htpasswd`` turns on basic auth; ``tls`` = (certificate, key) serves HTTPS instead of plain HTTP; ``token`` =
    (realm URL, certificate bundle) turns on the bearer-token flow with tokens signed by that certificate's key.
    """
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: apt-get install -y docker-registry")
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = root / "config.yml"
    text = (
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    if tls is not None:
        text += f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n"
    if htpasswd is not None:
        text += f"auth:\n  htpasswd:\n    realm: keepdocker-tests\n    path: {htpasswd}\n"
    if token is not None:
        text += (
            f"auth:\n  token:\n    realm: {token[0]}\n    service: keepdocker-registry\n"
            f"    issuer: keepdocker-tests\n    rootcertbundle: {token[1]}\n"
        )
    config.write_text(text)
    scheme = "https" if tls is not None else "http"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/v2/", timeout=1, context=insecure) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking for credentials
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def push_to_registry(docker_host: str, image: str, name: str, tag: str) -> None:
    """Tag ``image`` as ``name:tag`` in the engine and push it to the registry that ``name`` names."""
    client = docker.APIClient(base_url=docker_host, timeout=120)
    try:
        client.tag(image, name, tag)
        for event in client.push(name, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise RuntimeError(f"push of {name}:{tag} failed: {event['error']}")
    finally:
        client.close()


def _request(
    method: str, url: str, data: bytes | None = None, content_type: str | None = None
) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, data=data, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        return r.status, dict(r.headers)


def _put_blob(registry: str, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, headers = _request("POST", f"http://{registry}/v2/{name}/blobs/uploads/", b"")
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    _request("PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream")
    return digest


def _put_manifest(registry: str, name: str, ref: str, body: bytes, media_type: str) -> str:
    _request("PUT", f"http://{registry}/v2/{name}/manifests/{ref}", body, media_type)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def put_image(
    registry: str,
    name: str,
    tag: str,
    layers: Sequence[bytes],
    architecture: str = "amd64",
    variant: str | None = None,
    compress: bool = True,
    raw_blobs: Sequence[bytes] | None = None,
) -> tuple[str, str, int]:
    """Upload an image of the given layer tars to a plain-HTTP registry; return (manifest digest, image ID, size).

    ``raw_blobs`` replaces the uploaded layer blobs (to serve something other than gzip of the tars).
    """
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    config: dict[str, object] = {
        "architecture": architecture,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-02T03:04:05Z", "created_by": "keepdocker tests"} for _ in layers],
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config).encode()
    blobs = list(raw_blobs) if raw_blobs is not None else [gzip.compress(t, mtime=0) if compress else t for t in layers]
    layer_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _put_blob(registry, name, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": layer_type, "digest": _put_blob(registry, name, b), "size": len(b)} for b in blobs],
    }
    body = json.dumps(manifest).encode()
    digest = _put_manifest(registry, name, tag, body, "application/vnd.oci.image.manifest.v1+json")
    return digest, "sha256:" + hashlib.sha256(config_bytes).hexdigest(), len(body)


def put_index(registry: str, name: str, tag: str, entries: Sequence[tuple[str, int, str]]) -> str:
    """Upload an OCI index of (manifest digest, size, "os/arch[/variant]") entries as ``name:tag``; its digest."""
    manifests = []
    for digest, size, platform in entries:
        os_, arch, *variant = platform.split("/")
        spec = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": size,
                "platform": spec,
            }
        )
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    )
    return _put_manifest(registry, name, tag, body.encode(), "application/vnd.oci.image.index.v1+json")


# --- a flaky front and a token server ---------------------------------------------------------------------------


class _Forwarder(http.server.BaseHTTPRequestHandler):
    """Forwards GET/HEAD to the registry; answers 500 to the first ``failures`` manifest requests."""

    server: _FlakyServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _forward(self) -> None:
        srv = self.server
        with srv.lock:
            fail = "/manifests/" in self.path and srv.failures > 0
            if fail:
                srv.failures -= 1
                srv.failed += 1
        if fail:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection(srv.upstream, timeout=60)
        try:
            headers: dict[str, str] = {}
            for k, v in self.headers.items():  # repeated headers (several Accept lines) are joined, not dropped
                if k.lower() not in ("host", "connection"):
                    headers[k] = f"{headers[k]}, {v}" if k in headers else v
            conn.request(self.command, self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(key, value)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(body))
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        finally:
            conn.close()

    do_GET = _forward
    do_HEAD = _forward


class _FlakyServer(http.server.ThreadingHTTPServer):
    upstream: str
    failures: int
    failed: int
    lock: threading.Lock


@contextmanager
def flaky_front(upstream: str, failures: int) -> Iterator[tuple[str, _FlakyServer]]:
    """A read-only proxy on loopback in front of ``upstream`` whose first ``failures`` manifest requests get 500."""
    server = _FlakyServer(("127.0.0.1", 0), _Forwarder)
    server.upstream, server.failures, server.failed, server.lock = upstream, failures, 0, threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    """GET /token: a JWT for the scope asked, signed with the server's key, when the basic credentials match."""

    server: _TokenServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        srv = self.server
        expected = "Basic " + base64.b64encode(srv.credentials.encode()).decode()
        if self.headers.get("Authorization") != expected:
            srv.refused += 1
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), scope.split(":")[-1]
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": "keepdocker-tests",
            "sub": srv.credentials.split(":")[0],
            "aud": query.get("service", [""])[0],
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        header = {"alg": "ES256", "typ": "JWT", "x5c": [base64.b64encode(srv.cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
        der = srv.key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        token = signing_input.decode() + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        srv.issued += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TokenServer(http.server.ThreadingHTTPServer):
    credentials: str
    key: Any
    cert_der: bytes
    issued: int
    refused: int


@contextmanager
def token_registry(root: Path, user: str, password: str) -> Iterator[tuple[str, _TokenServer]]:
    """A registry on loopback (plain HTTP) using the bearer-token flow, with its token endpoint; yields both.

    The token endpoint issues ES256 JWTs (certificate in ``x5c``, trusted by the registry's ``rootcertbundle``) to
    clients presenting ``user:password`` with HTTP basic auth, and counts issued and refused requests.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from keepdocker.standin.tls import ensure_certificate

    cert_path, key_path = ensure_certificate(root / "token-tls", ["127.0.0.1"])
    server = _TokenServer(("127.0.0.1", 0), _TokenHandler)
    server.credentials, server.issued, server.refused = f"{user}:{password}", 0, 0
    server.key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    server.cert_der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    try:
        with local_registry(root / "registry", token=(realm, cert_path)) as address:
            yield address, server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
