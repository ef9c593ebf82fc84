"""Wiring: open a data directory, start the HTTPS API and the Keep server, publish the environment, stop cleanly."""

from __future__ import annotations

import os
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path

from keepdocker.standin.api import ApiApp, KeepServiceInfo, RequestStats
from keepdocker.standin.faults import FaultInjector
from keepdocker.standin.httpd import ApiServer, KeepServer, ServerContext
from keepdocker.standin.keepstore import BlockStore
from keepdocker.standin.signing import BlobSigner
from keepdocker.standin.store import BLOB_SIGNING_TTL, Store
from keepdocker.standin.tls import ensure_certificate, server_context

__all__ = ["DataDir", "Standin", "StandinConfig", "default_data_dir", "format_env"]

_DRAIN_SECONDS = 5.0  # how long stop() lets requests already being handled finish


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/keepdocker/standin`` (``~/.local/share`` when XDG_DATA_HOME is unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "keepdocker" / "standin"


@dataclass(frozen=True)
class DataDir:
    """The layout of a stand-in data directory."""

    root: Path

    @property
    def database(self) -> Path:
        """The SQLite records."""
        return self.root / "standin.sqlite3"

    @property
    def blocks(self) -> Path:
        """The block directory."""
        return self.root / "blocks"

    @property
    def tls(self) -> Path:
        """The certificate and key."""
        return self.root / "tls"

    def open_store(self, cluster_id: str = "zzzzz", blob_signing_ttl: int = BLOB_SIGNING_TTL) -> Store:
        """Open (creating on first use) the record store; usable while no server runs on this directory."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Store(self.database, cluster_id=cluster_id, blob_signing_ttl=blob_signing_ttl)

    def open_blocks(self) -> BlockStore:
        """Open the block directory."""
        return BlockStore(self.blocks)


@dataclass(frozen=True)
class StandinConfig:
    """Everything `keepdocker standin` can be told."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    keep_port: int = 0
    cluster_id: str = "zzzzz"
    api_failure_rate: float = 0.0
    keep_failure_rate: float = 0.0
    latency_ms: int = 0
    keep_mib_per_second: float = 0.0
    seed: int | None = None
    verbose: bool = False
    blob_signature_ttl: int = BLOB_SIGNING_TTL  # seconds a permission signature stays valid


def _advertised(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_env(env: dict[str, str]) -> str:
    """``export NAME=VALUE`` lines (values shell-quoted), one per variable."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


class Standin:
    """A running stand-in: ``start()`` binds both ports and serves in background threads, ``stop()`` ends it."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.layout = DataDir(config.data_dir)
        self.store = self.layout.open_store(config.cluster_id, config.blob_signature_ttl)
        self.blocks = self.layout.open_blocks()
        self.signer = BlobSigner(self.store.signing_key, config.blob_signature_ttl)
        self.stats = RequestStats()
        self.faults = FaultInjector(
            api_failure_rate=config.api_failure_rate,
            keep_failure_rate=config.keep_failure_rate,
            latency_ms=config.latency_ms,
            keep_mib_per_second=config.keep_mib_per_second,
            seed=config.seed,
        )
        self._threads: list[threading.Thread] = []
        self.api_server: ApiServer | None = None
        self.keep_server: KeepServer | None = None

    def start(self) -> dict[str, str]:
        """Bind and serve; return the environment clients need."""
        host = self.config.host
        public = _advertised(host)
        cert, key = ensure_certificate(self.layout.tls, [public])
        placeholder = ApiApp(self.store, self.blocks, self.signer, "", KeepServiceInfo(public, 0), self.stats)
        ctx = ServerContext(placeholder, self.store, self.blocks, self.signer, self.faults, self.stats,
                            self.config.verbose)
        self.keep_server = KeepServer((host, self.config.keep_port), ctx)
        self.api_server = ApiServer((host, self.config.port), ctx, server_context(cert, key))
        api_port = self.api_server.server_address[1]
        keep_port = self.keep_server.server_address[1]
        root_url = f"https://{_host_port(public, api_port)}/"
        ctx.app = ApiApp(self.store, self.blocks, self.signer, root_url, KeepServiceInfo(public, keep_port), self.stats)
        for server in (self.keep_server, self.api_server):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return {
            "ARVADOS_API_HOST": _host_port(public, api_port),
            "ARVADOS_API_TOKEN": self.store.token("admin"),
            "ARVADOS_API_HOST_INSECURE": "1",
            "KEEPDOCKER_STANDIN_USER_TOKEN": self.store.token("user"),
            "KEEPDOCKER_STANDIN_KEEP_PORT": str(keep_port),
            "KEEPDOCKER_STANDIN_DATA_DIR": str(self.config.data_dir),
            "KEEPDOCKER_STANDIN_CA_FILE": str(cert),
        }

    def stop(self) -> None:
        """Stop serving, close the sockets and the database."""
        for server in (self.api_server, self.keep_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        # Let requests already inside finish, as a server shutting down gracefully does; stragglers get 503.
        self.stats.wait_in_flight(lambda n: n <= 0, _DRAIN_SECONDS)
        self.store.close()
