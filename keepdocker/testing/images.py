"""Build small real images in a Docker engine from generated layers (no registry needed)."""

from __future__ import annotations

import io
import random
import shutil
import tarfile
from pathlib import Path

import docker

__all__ = ["build_image", "rootfs_tar"]


def rootfs_tar(seed: int = 0, payload_bytes: int = 4096, busybox: bool = True) -> bytes:
    """A root filesystem tar: a static busybox (when installed) and a seeded random payload file."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "data", "tmp"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        bb = shutil.which("busybox")
        if busybox and bb:
            data = Path(bb).read_bytes()
            info = tarfile.TarInfo("bin/busybox")
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
            for applet in ("sh", "cat", "ls", "echo"):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                tar.addfile(link)
        part, left = 0, payload_bytes
        while left > 0 or part == 0:  # random bytes in files of at most 64 MiB (randbytes has a size limit)
            payload = rng.randbytes(min(left, 64 << 20))
            info = tarfile.TarInfo(f"data/payload-{seed}-{part}.bin")
            info.size = len(payload)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
            left -= len(payload)
            part += 1
    return buf.getvalue()


def build_image(
    docker_host: str, repository: str, tag: str = "latest", seed: int = 0, payload_bytes: int = 4096
) -> str:
    """Import a generated rootfs as ``repository:tag`` into the engine; return the engine's image ID."""
    client = docker.DockerClient(base_url=docker_host, timeout=300)
    try:
        client.api.import_image_from_data(
            rootfs_tar(seed, payload_bytes), repository=repository, tag=tag, changes=['CMD ["/bin/sh"]']
        )
        image_id: str = client.images.get(f"{repository}:{tag}").id
        return image_id
    finally:
        client.close()
