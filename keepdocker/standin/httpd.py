"""HTTP front ends: the HTTPS API server and the plain-HTTP Keep server, both HTTP/1.1 with keep-alive."""

from __future__ import annotations

import errno
import json
import socket
import ssl
import sys
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from keepdocker.standin.api import ApiApp, RequestStats, error_body
from keepdocker.standin.discovery import MAX_REQUEST_SIZE
from keepdocker.standin.faults import FaultInjector
from keepdocker.standin.keepstore import MAX_BLOCK_SIZE, BlockHashMismatch, BlockStore, BlockTruncated
from keepdocker.standin.manifest import LOCATOR_RE
from keepdocker.standin.signing import EMPTY_BLOCK_MD5, BlobSigner, SignatureError
from keepdocker.standin.store import Store

__all__ = ["ApiServer", "KeepServer", "ServerContext"]

DISCOVERY_PATH = "/discovery/v1/apis/arvados/v1/rest"
# Unexpected exceptions are answered with a permanent 4xx: a 5xx would make the SDK retry for minutes.
_INTERNAL_ERROR_STATUS = 422
_IDLE_TIMEOUT = 300


@dataclass
class ServerContext:
    """What both front ends share."""

    app: ApiApp
    store: Store
    blocks: BlockStore
    signer: BlobSigner
    faults: FaultInjector
    stats: RequestStats
    verbose: bool = False


def _token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "oauth2") and value.strip():
        return value.strip()
    return None


class _Handler(BaseHTTPRequestHandler):
    """Shared plumbing: JSON replies with Content-Length, quiet logging unless verbose."""

    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    # Small JSON replies written in pieces would otherwise wait ~40 ms for the client's delayed ACK (Nagle).
    disable_nagle_algorithm = True
    server: _ContextServer

    _counted = False

    @property
    def ctx(self) -> ServerContext:
        return self.server.ctx

    def parse_request(self) -> bool:
        # The request line has been read: from here until handle_one_request returns, the request is in flight
        # (tests wait for zero after killing a client). The stand-in's own /_standin/ endpoints are not counted.
        self._counted = b" /_standin/" not in getattr(self, "raw_requestline", b"")
        if self._counted:
            self.ctx.stats.started()
        return super().parse_request()

    def handle_one_request(self) -> None:
        self._counted = False
        try:
            super().handle_one_request()
        finally:
            if self._counted:
                self.ctx.stats.started(-1)

    def log_message(self, format: str, *args: Any) -> None:
        if self.ctx.verbose:
            sys.stderr.write(f"standin {self.address_string()} {format % args}\n")

    def send_json(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_bytes(status, data, "application/json", extra)

    def send_bytes(self, status: int, data: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def refuse(self, status: int, message: str, close: bool = False) -> None:
        """Answer an error; with ``close`` the unread request body is abandoned with the connection."""
        if close:
            self.close_connection = True
        self.send_json(status, error_body(message))


class _ContextServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], ctx: ServerContext) -> None:
        self.ctx = ctx
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, handler)


class _ApiHandler(_Handler):
    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.refuse(411, "chunked request bodies are not supported: send Content-Length", close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.refuse(400, "invalid Content-Length", close=True)
            return
        if length > MAX_REQUEST_SIZE:
            self.refuse(413, f"request body larger than maxRequestSize ({MAX_REQUEST_SIZE} bytes)", close=True)
            return
        body = self.rfile.read(length) if length else b""
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        override = self.headers.get("X-HTTP-Method-Override", "").upper()
        if method == "POST" and override == "GET":
            # googleapiclient turns a GET whose URL exceeds 2048 characters into this POST (form-encoded query).
            method = "GET"
            query.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            body = b""
        ctx = self.ctx
        ctx.faults.delay()
        resource = url.path.strip("/").split("/")
        ctx.stats.add(f"api {method} {'/'.join(resource[2:3]) or url.path}")
        if url.path == DISCOVERY_PATH and method == "GET":
            self.send_bytes(200, ctx.app.discovery_bytes, "application/json")
            return
        if not url.path.startswith("/_standin/") and ctx.faults.fail_api():
            ctx.stats.add("api injected 503")
            self.refuse(503, "injected fault: --api-failure-rate")
            return
        try:
            status, payload = ctx.app.handle(method, url.path, query, _token(self.headers.get("Authorization")), body)
        except Exception as exc:  # a stand-in bug: answer 4xx so the SDK fails fast instead of retrying for minutes
            traceback.print_exc(file=sys.stderr)
            status, payload = _INTERNAL_ERROR_STATUS, error_body(
                f"stand-in internal error ({type(exc).__name__}: {exc}); this is a bug in the stand-in, see its stderr"
            )
        self.send_json(status, payload)


class _OverLink:
    """A request body read through the fault injector's shared Keep link (a no-op unless it is limited)."""

    def __init__(self, raw: Any, faults: FaultInjector) -> None:
        self.raw = raw
        self.faults = faults

    def readinto(self, buffer: memoryview, /) -> int:
        n = int(self.raw.readinto(buffer) or 0)
        self.faults.keep_link(n)
        return n


class _KeepHandler(_Handler):
    _expect_checked = False
    _expect_problem: tuple[int, str, bool] | None = None

    def handle_expect_100(self) -> bool:
        """Refuse a doomed PUT before inviting its body, so the client never streams 64 MiB for nothing."""
        if self.command != "PUT":
            return super().handle_expect_100()
        self._expect_checked, self._expect_problem = True, self._check_put()
        if self._expect_problem is not None:
            self.refuse(*self._expect_problem)
            self._expect_checked = False
            return False
        return super().handle_expect_100()

    def _check_put(self) -> tuple[int, str, bool] | None:
        ctx = self.ctx
        ctx.faults.delay()
        ctx.stats.add("keep PUT")
        md5 = unquote(urlsplit(self.path).path).strip("/")
        if not BlockStore.valid_md5(md5):
            return 400, f"invalid block hash {md5!r} in PUT path: expected 32 lowercase hex digits", True
        token = _token(self.headers.get("Authorization"))
        if token is None or ctx.store.authenticate(token) is None:
            return 401, "Not logged in: Keep PUT needs 'Authorization: Bearer <token>' with a valid token", True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or self.headers.get("Content-Length") is None:
            return 411, "Keep PUT needs a Content-Length header", True
        try:
            length = int(self.headers["Content-Length"])
        except ValueError:
            return 400, "invalid Content-Length", True
        if length > MAX_BLOCK_SIZE:
            return 413, f"block of {length} bytes exceeds the {MAX_BLOCK_SIZE}-byte limit", True
        if ctx.faults.fail_keep():
            ctx.stats.add("keep injected 503")
            return 503, "injected fault: --keep-failure-rate", True
        return None

    def do_PUT(self) -> None:
        problem = self._expect_problem if self._expect_checked else self._check_put()
        self._expect_checked, self._expect_problem = False, None
        if problem is not None:
            self.refuse(*problem)
            return
        ctx = self.ctx
        md5 = unquote(urlsplit(self.path).path).strip("/")
        length = int(self.headers["Content-Length"])
        token = _token(self.headers.get("Authorization"))
        assert token is not None
        try:
            body = _OverLink(self.rfile, ctx.faults) if ctx.faults.keep_mib_per_second else self.rfile
            ctx.blocks.write_stream(md5, body, length)  # type: ignore[arg-type]
        except BlockHashMismatch as exc:
            self.refuse(400, str(exc))
            return
        except BlockTruncated as exc:
            self.refuse(400, str(exc), close=True)
            return
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.refuse(507, f"the stand-in's block directory is full: {exc}", close=True)
                return
            raise
        ctx.stats.add("keep PUT bytes", length)
        try:
            desired = max(1, int(self.headers.get("X-Keep-Desired-Replicas", "1")))
        except ValueError:
            desired = 1
        classes = [c.strip() for c in self.headers.get("X-Keep-Storage-Classes", "default").split(",") if c.strip()]
        signed = ctx.signer.sign_locator(f"{md5}+{length}", token, ctx.signer.default_expiry())
        self.send_bytes(
            200,
            f"{signed}\n".encode(),
            "text/plain",
            {
                "X-Keep-Replicas-Stored": str(desired),
                "X-Keep-Storage-Classes-Confirmed": ", ".join(f"{c}={desired}" for c in classes or ["default"]),
            },
        )

    def do_GET(self) -> None:
        self._read()

    def do_HEAD(self) -> None:
        self._read()

    def _read(self) -> None:
        ctx = self.ctx
        ctx.faults.delay()
        ctx.stats.add(f"keep {self.command}")
        locator = unquote(urlsplit(self.path).path).strip("/")
        if LOCATOR_RE.match(locator) is None:
            self.refuse(400, f"invalid locator {locator!r}: expected <md5>+<size>[+hints]")
            return
        if ctx.faults.fail_keep():
            ctx.stats.add("keep injected 503")
            self.refuse(503, "injected fault: --keep-failure-rate")
            return
        md5 = locator[:32]
        if md5 != EMPTY_BLOCK_MD5:
            token = _token(self.headers.get("Authorization"))
            if token is None or ctx.store.authenticate(token) is None:
                self.refuse(401, "Not logged in: Keep reads need 'Authorization: Bearer <token>' with a valid token")
                return
            try:
                ctx.signer.verify_locator(locator, token)
            except SignatureError as exc:
                self.refuse(403 if exc.reason == "invalid" else 401, str(exc))
                return
            size = ctx.blocks.size(md5)
            if size is None:
                self.refuse(404, f"block {md5} not found")
                return
        else:
            size = 0
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD" or size == 0:
            return
        ctx.faults.keep_link(size)
        with ctx.blocks.open(md5) as block:
            self.wfile.flush()
            self.connection.sendfile(block)
        ctx.stats.add("keep GET bytes", size)


class ApiServer(_ContextServer):
    """The HTTPS API server; TLS handshakes happen in the connection's own thread."""

    def __init__(self, address: tuple[str, int], ctx: ServerContext, tls: ssl.SSLContext) -> None:
        super().__init__(address, _ApiHandler, ctx)
        self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)


class KeepServer(_ContextServer):
    """The plain-HTTP Keep server."""

    def __init__(self, address: tuple[str, int], ctx: ServerContext) -> None:
        super().__init__(address, _KeepHandler, ctx)
