"""Read images straight from a registry, with no Docker engine: skopeo fetches verified blobs, we write the archive.

The registry protocol (OCI distribution API, anonymous / basic / bearer-token auth, Docker config files and credential
helpers, TLS with custom CAs, retries) is left to Debian's ``skopeo``, run as a subprocess; keepdocker only decides
what to ask for and checks what comes back:

* ``resolve_image`` reads the manifest of REF (``skopeo inspect --raw``). A manifest list / OCI index is resolved to
  the manifest for the wanted platform here, and every manifest fetched by digest is re-hashed. The image ID is the
  config digest, known before any layer is downloaded, so a push can find the image already in Arvados first.
* ``fetch_to_cache`` copies the image pinned by manifest digest into a private temporary ``dir:`` layout (``skopeo
  copy``), then ``write_docker_archive`` writes the archive straight into the tar cache entry, checking every blob
  and diff ID as it goes (a failed check discards the entry).

Secrets never reach argv, logs or parameters: skopeo reads credentials from an auth file (the user's Docker config,
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, or a private 0600 temporary file written from explicit
credentials and removed afterwards). Plain HTTP is used only for loopback registries (as Docker does) or with an
explicit ``allow_http``; a registry that speaks TLS is always verified, against ``ca_file`` when given.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from keepdocker.cache import CachedFile, CacheSink, TarCache
from keepdocker.errors import (
    ConfigurationError,
    ImageNotFoundError,
    RegistryError,
    RegistryUnavailableError,
    UsageError,
)
from keepdocker.images.distribution import (
    Platform,
    config_platform,
    is_index,
    parse_index,
    parse_manifest,
    select_platform,
    verify_blob,
    write_docker_archive,
)
from keepdocker.references import ImageReference, parse_reference

__all__ = ["DEFAULT_PLATFORM", "RegistryImage", "RegistryOptions", "fetch_to_cache", "registry_host", "resolve_image"]

DEFAULT_PLATFORM = "linux/amd64"
_DOCKER_HUB = "docker.io"
_RETRIES = 3  # skopeo's own retries of network failures, per call
_RETRY_DELAYS = (1.0, 3.0)  # our retries of a call that failed temporarily (5xx); the flow's task retries come on top
_TIMEOUT = 3600.0  # seconds for one skopeo call (a copy of a large image on a slow link)


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach the registry: platform, plain-HTTP opt-in, CA file, auth file, or explicit credentials."""

    platform: str = DEFAULT_PLATFORM
    allow_http: bool = False  # plain HTTP for a non-loopback registry (loopback needs no opt-in)
    ca_file: Path | None = None  # PEM bundle of CAs to trust for the registry's certificate
    auth_file: Path | None = None  # Docker config.json / containers auth.json; default: the user's Docker config
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RegistryImage:
    """An image resolved in its registry: the reference pinned to its manifest digest, and its image ID."""

    reference: str  # as given, familiar
    repository: str  # familiar repository, e.g. 127.0.0.1:5000/kd/app or busybox
    repo_tag: str | None
    manifest_digest: str
    image_id: str  # the config digest
    platform: str

    @classmethod
    def pinned_to(cls, pinned: str, image_id: str, platform: str) -> RegistryImage:
        """The image as ``resolve_image`` found it, from what a plan keeps: ``repository@digest`` and the ID."""
        repository, _, digest = pinned.rpartition("@")
        return cls(pinned, repository, None, digest, image_id, platform)

    @property
    def pinned(self) -> str:
        """``repository@manifest digest``: what is fetched, so the bytes cannot change between resolve and fetch."""
        return f"{self.repository}@{self.manifest_digest}"


def registry_host(ref: ImageReference) -> str:
    """The registry ``host[:port]`` of a reference (docker.io for Docker Hub names)."""
    return ref.domain or _DOCKER_HUB


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(host: str) -> tuple[str, int]:
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") else 443
    name, sep, port = host.partition(":")
    return name, int(port) if sep else 443


def _speaks_tls(host: str, timeout: float = 10.0) -> bool:
    """True when ``host`` completes a TLS handshake (certificate not checked here: skopeo verifies it)."""
    name, port = _split_host(host)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((name, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=name),
        ):
            return True
    except ssl.SSLError:
        return False
    except OSError as exc:
        raise RegistryUnavailableError(f"cannot reach the registry {host}: {exc.strerror or exc}") from None


def _docker_config() -> Path | None:
    """The user's Docker config file (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``) when present."""
    directory = os.environ.get("DOCKER_CONFIG")
    path = Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"
    return path if path.is_file() else None


class _Skopeo:
    """One session of skopeo calls for one registry: a private directory with the auth file and CA certificates."""

    def __init__(self, host: str, options: RegistryOptions, work: Path) -> None:
        binary = shutil.which("skopeo")
        if binary is None:
            raise ConfigurationError(
                "pushing from a registry needs skopeo: install it (`apt-get install -y skopeo`) on this worker"
            )
        self.binary = binary
        self.host = host
        self.options = options
        self.work = work
        self.flags: dict[str, str] = {}  # option name (without --src-/--) -> value, mapped per subcommand
        self._secret = options.password or ""
        if options.username is not None or options.password is not None:
            if not options.username or options.password is None:
                raise UsageError("registry credentials need both a username and a password")
            self.flags["authfile"] = str(self._auth_file(options.username, options.password))
        elif options.auth_file is not None:
            if not options.auth_file.is_file():
                raise UsageError(f"registry auth file {options.auth_file}: not a readable file")
            self.flags["authfile"] = str(options.auth_file)
        elif (config := _docker_config()) is not None:
            self.flags["authfile"] = str(config)
        if options.ca_file is not None:
            if not options.ca_file.is_file():
                raise UsageError(f"registry CA file {options.ca_file}: not a readable file")
            certs = work / "certs"
            certs.mkdir(mode=0o700)
            shutil.copyfile(options.ca_file, certs / "ca.crt")
            self.flags["cert-dir"] = str(certs)
        if (_is_loopback(host) or options.allow_http) and not _speaks_tls(host):
            self.flags["tls-verify"] = "false"  # plain HTTP: loopback, or explicitly allowed

    def _auth_file(self, username: str, password: str) -> Path:
        path = self.work / "auth.json"
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {self.host: {"auth": token}}}, f)
        return path

    def _args(self, prefix: str) -> list[str]:
        args = [f"--retry-times={_RETRIES}"]
        for name, value in self.flags.items():
            if name == "tls-verify":
                args.append(f"--{prefix}tls-verify={value}")
            else:
                args += [f"--{prefix}{name}", value]
        return args

    def run(self, args: list[str], what: str) -> bytes:
        """Run skopeo, again after a temporary failure (5xx, unreachable: skopeo retries only network errors).

        A failure becomes one classified line (the secret is scrubbed from any message).
        """
        for delay in (*_RETRY_DELAYS, None):
            try:
                proc = subprocess.run(
                    [self.binary, *args], capture_output=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL, check=False
                )
            except subprocess.TimeoutExpired:
                raise RegistryUnavailableError(f"{what}: no answer from {self.host} in {_TIMEOUT:.0f} s") from None
            if proc.returncode == 0:
                return proc.stdout
            error = self._error(proc.stderr.decode("utf-8", "replace"), what)
            if not isinstance(error, RegistryUnavailableError) or delay is None:
                raise error
            time.sleep(delay)
        raise AssertionError("unreachable")

    def inspect_raw(self, image: str, what: str, config: bool = False) -> bytes:
        """The raw manifest (or config) of ``docker://image``."""
        extra = ["--config"] if config else []
        return self.run(["inspect", "--raw", *extra, *self._args(""), f"docker://{image}"], what)

    def missing(self, repository: str, what: str, cause: ImageNotFoundError) -> ImageNotFoundError:
        """Tell a missing repository from a missing tag (registries answer "manifest unknown" for both)."""
        try:
            listed = json.loads(self.run(["list-tags", *self._args(""), f"docker://{repository}"], what))
        except ImageNotFoundError:
            return ImageNotFoundError(f"{what}: no such repository in {self.host}")
        except (RegistryError, ValueError):
            return cause
        tags = sorted(listed.get("Tags") or []) if isinstance(listed, dict) else []
        if not tags:
            return ImageNotFoundError(f"{what}: the repository exists in {self.host} but has no tags")
        shown = ", ".join(tags[:10]) + (f" and {len(tags) - 10} more" if len(tags) > 10 else "")
        return ImageNotFoundError(f"{what}: no such tag or digest in {self.host}; it has {shown}")

    def copy_to_dir(self, image: str, target: Path, what: str) -> None:
        """Copy ``docker://image`` (one platform's manifest) into a ``dir:`` layout, blobs as the registry has them."""
        self.run(
            ["copy", "--quiet", "--preserve-digests", *self._args("src-"), f"docker://{image}", f"dir:{target}"], what
        )

    def _error(self, stderr: str, what: str) -> Exception:
        messages = re.findall(r'msg="((?:[^"\\]|\\.)*)"', stderr)
        detail = messages[-1] if messages else stderr.strip().splitlines()[-1:] or ["skopeo failed"]
        text = detail if isinstance(detail, str) else detail[0]
        text = text.replace('\\"', '"')
        if self._secret:
            text = text.replace(self._secret, "***")
        text = " ".join(text.split())[:300]
        low = text.lower()
        host = self.host
        if "manifest unknown" in low:
            return ImageNotFoundError(f"{what}: no such tag or digest in {host} ({_tail(text)})")
        if "name unknown" in low or "repository name not known" in low:
            return ImageNotFoundError(f"{what}: no such repository in {host} ({_tail(text)})")
        if re.search(r"\b404\b", text) or "not found" in low:
            return ImageNotFoundError(f"{what}: not found in {host} ({_tail(text)})")
        if "unauthorized" in low or "authentication required" in low or "401" in low or "denied" in low:
            return RegistryError(
                f"{what}: {host} refused the credentials (wrong or missing): log in with `docker login {host}` "
                "or check $DOCKER_CONFIG"
            )
        if "x509" in low or "certificate" in low:
            return RegistryError(
                f"{what}: the TLS certificate of {host} is not trusted ({_tail(text)}); give its CA with --registry-ca"
            )
        if "server gave http response to https client" in low:
            return RegistryError(
                f"{what}: {host} speaks plain HTTP, not HTTPS; if you trust the network, allow it with --allow-http"
            )
        if re.search(r"\b5\d\d\b", text) or any(
            s in low for s in ("connection refused", "timeout", "timed out", "no such host", "eof", "too many requests")
        ):
            return RegistryUnavailableError(f"{what}: {host} is unavailable ({_tail(text)}); retry later")
        return RegistryError(f"{what}: {text}")


def _tail(text: str) -> str:
    """The last two clauses of a nested Go error message (the cause), without a repeated one."""
    parts = list(dict.fromkeys(text.split(": ")))
    return ": ".join(parts[-2:])


@contextlib.contextmanager
def _session(host: str, options: RegistryOptions, parent: Path | None = None) -> Iterator[_Skopeo]:
    work = Path(tempfile.mkdtemp(prefix=".registry-", dir=parent))  # mkdtemp: mode 0700
    try:
        yield _Skopeo(host, options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resolve_image(reference: str, tag: str | None = None, options: RegistryOptions | None = None) -> RegistryImage:
    """Find REF in its registry and pin it: the manifest digest for the wanted platform and the image ID.

    Raises ImageNotFoundError (no such tag or repository), RegistryError (credentials, certificate, bad manifest),
    RegistryUnavailableError (5xx, unreachable) and UsageError (no image for the platform, bad reference).
    """
    options = options or RegistryOptions()
    ref = parse_reference(reference, tag)
    if ref.repository is None:
        raise UsageError(f"{reference}: an image ID cannot be fetched from a registry; give repository[:tag]")
    wanted = Platform.parse(options.platform)
    host = registry_host(ref)
    what = f"registry image {ref.pull_name}"
    # By digest when one is given (skopeo refuses tag and digest together; the digest decides anyway).
    name = f"{ref.repository}@{ref.digest}" if ref.digest else ref.pull_name
    with _session(host, options) as skopeo:
        try:
            raw = skopeo.inspect_raw(name, what)
        except ImageNotFoundError as exc:
            raise skopeo.missing(ref.repository, what, exc) from None
        if ref.digest is not None:
            verify_blob(raw, ref.digest, what)
        if is_index(raw, what):
            chosen = select_platform(parse_index(raw, what), wanted, what)
            digest = chosen.digest
            raw = skopeo.inspect_raw(f"{ref.repository}@{digest}", what)
            verify_blob(raw, digest, f"{what} ({wanted})")
        else:
            digest = ref.digest or "sha256:" + hashlib.sha256(raw).hexdigest()
        manifest = parse_manifest(raw, what)
        config = skopeo.inspect_raw(f"{ref.repository}@{digest}", what, config=True)
        verify_blob(config, manifest.config.digest, f"{what} config")
    offered = config_platform(config)
    if offered is not None and not wanted.accepts(offered):
        raise UsageError(f"{what} is a {offered.normalized()} image, not {wanted}: give --platform {offered}")
    return RegistryImage(
        reference=reference,
        repository=ref.repository,
        repo_tag=ref.repo_tag,
        manifest_digest=digest,
        image_id=manifest.config.digest,
        platform=str(wanted),
    )


def fetch_to_cache(image: RegistryImage, cache: TarCache, options: RegistryOptions | None = None) -> CachedFile:
    """The image's Docker archive in ``cache`` (key = image ID, as for `docker save`), fetched only when absent.

    The archive carries no tags, like the ``docker save <ID>`` archive arv-keepdocker uploads, so one image gives
    one collection whatever it was pushed as. Temporary files live beside the cache and are removed on every path.
    """
    options = options or RegistryOptions()
    ref = parse_reference(image.pinned)
    host = registry_host(ref)
    what = f"registry image {image.reference}"

    def fill(sink: CacheSink) -> None:
        with _session(host, options, cache.root) as skopeo:
            blobs = skopeo.work / "blobs"
            skopeo.copy_to_dir(image.pinned, blobs, what)
            raw = (blobs / "manifest.json").read_bytes()
            verify_blob(raw, image.manifest_digest, f"{what} manifest")
            manifest = parse_manifest(raw, what)
            if manifest.config.digest != image.image_id:
                raise RegistryError(f"{what}: the fetched manifest names config {manifest.config.digest}")
            write_docker_archive(blobs, manifest, sink.write)  # straight into the cache entry, verified as it goes

    return cache.put_stream(image.image_id, fill)
