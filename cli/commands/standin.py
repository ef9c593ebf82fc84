"""`keepdocker standin`: run the local Arvados stand-in until SIGTERM/SIGINT, printing its environment when ready."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from keepdocker.errors import ConfigurationError, UsageError

__all__ = ["add_parser", "run"]


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate must be between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _bandwidth(text: str) -> float:
    value = float(text)
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a bandwidth in MiB/s must not be negative, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register the `standin` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "standin",
        help="run a local Arvados API + Keep stand-in",
        description="Run a persistent local server that speaks the Arvados API (HTTPS) and Keep (HTTP). When ready "
        "it prints `export NAME=VALUE` lines (ARVADOS_API_HOST, ARVADOS_API_TOKEN, ARVADOS_API_HOST_INSECURE, "
        "KEEPDOCKER_STANDIN_USER_TOKEN, ...) and runs until SIGTERM or SIGINT.",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="records and blocks (default: $XDG_DATA_HOME/keepdocker/standin)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_non_negative, default=0, help="API port (default 0: any free port)")
    parser.add_argument("--keep-port", type=_non_negative, default=0, help="Keep port (default 0: any free port)")
    parser.add_argument("--env-file", type=Path, default=None, help="also write the export lines to this file")
    parser.add_argument("--cluster-id", default="zzzzz", help="UUID prefix, used when the data dir is created")
    parser.add_argument(
        "--api-failure-rate",
        type=_rate,
        default=0.0,
        help="answer this fraction of API requests with 503 (discovery is never failed)",
    )
    parser.add_argument(
        "--keep-failure-rate", type=_rate, default=0.0, help="answer this fraction of Keep requests with 503"
    )
    parser.add_argument("--latency-ms", type=_non_negative, default=0, help="add this latency to every request")
    parser.add_argument(
        "--keep-mib-per-second",
        type=_bandwidth,
        default=0.0,
        metavar="R",
        help="pass every Keep transfer through one link of R MiB/s (default: unlimited), as to a remote cluster",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault-injection random generator")
    parser.add_argument(
        "--blob-signature-ttl",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="how long block permission signatures stay valid (default 1209600, two weeks); a short TTL lets "
        "tests make signatures expire",
    )
    parser.add_argument(
        "--sample-v1-images",
        type=_non_negative,
        default=0,
        metavar="N",
        help="on first start of a data dir, store N generated v1 images the way an old cluster did (legacy/sampleI:v1, "
        "every third also :latest), so a migration can be rehearsed",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    parser.set_defaults(func=run)


def _write_env_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def seed_samples(env: dict[str, str], data_dir: Path, count: int) -> None:
    """Store ``count`` generated v1 images once per data dir (a marker file records it); report on stderr."""
    import tempfile

    from keepdocker.arv.client import ArvadosConfig, connect
    from keepdocker.testing.oldcluster import seed_v1_image
    from keepdocker.testing.v1archives import random_v1_archive

    marker = data_dir / "sample-v1-images"
    if count == 0 or marker.exists():
        return
    session = connect(ArvadosConfig.from_env(env))
    with tempfile.TemporaryDirectory(prefix="keepdocker-samples-") as tmp:
        for i in range(count):
            generated = random_v1_archive(7000 + i, layers=3, repositories=i % 2 == 0, symlinks=False)
            path = generated.write(Path(tmp) / f"{i}.tar")
            names = (f"legacy/sample{i}:v1", f"legacy/sample{i}:latest") if i % 3 == 0 else (f"legacy/sample{i}:v1",)
            image = seed_v1_image(session, path, generated.leaves[0], names)
            print(f"sample v1 image {image.v1_id[:12]} {' '.join(names)} -> {image.collection.pdh}", file=sys.stderr)
    marker.write_text(f"{count}\n")


def run(args: argparse.Namespace) -> int:
    """Start the stand-in, publish its environment, and block until a stop signal; return 0 on a clean stop."""
    from keepdocker.standin import Standin, StandinConfig, default_data_dir, format_env
    from keepdocker.standin.store import BLOB_SIGNING_TTL

    if len(args.cluster_id) != 5 or not args.cluster_id.isalnum() or args.cluster_id != args.cluster_id.lower():
        raise UsageError(f"--cluster-id {args.cluster_id!r}: expected 5 lowercase letters or digits")
    config = StandinConfig(
        data_dir=(args.data_dir or default_data_dir()).resolve(),
        host=args.host,
        port=args.port,
        keep_port=args.keep_port,
        cluster_id=args.cluster_id,
        api_failure_rate=args.api_failure_rate,
        keep_failure_rate=args.keep_failure_rate,
        latency_ms=args.latency_ms,
        keep_mib_per_second=args.keep_mib_per_second,
        seed=args.seed,
        verbose=args.verbose,
        blob_signature_ttl=args.blob_signature_ttl or BLOB_SIGNING_TTL,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    standin = Standin(config)
    try:
        try:
            env = standin.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {config.host} (API port {config.port}, Keep port {config.keep_port}): {exc}; "
                "choose other --port/--keep-port values or 0 for any free port"
            ) from exc
        env["KEEPDOCKER_STANDIN_PID"] = str(os.getpid())
        seed_samples(env, config.data_dir, args.sample_v1_images)
        text = format_env(env)
        if args.env_file is not None:
            _write_env_file(args.env_file, text)
        sys.stdout.write(text)
        sys.stdout.flush()
        while not stop.wait(1.0):
            pass
    finally:
        standin.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
