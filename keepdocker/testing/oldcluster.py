"""Seed Arvados with v1 images stored the way a pre-Docker-1.10 cluster stored them (for tests, demo, benchmarks)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

import arvados.keep

from keepdocker.arv.catalog import (
    HASH_LINK,
    MIGRATION_LINK,
    MIGRATION_LINK_NAME,
    REPO_TAG_LINK,
    LinkSpec,
    collection_name,
    create_links,
)
from keepdocker.arv.client import ArvadosSession
from keepdocker.arv.transfer import CollectionRef, upload_tar
from keepdocker.standin.manifest import portable_data_hash
from keepdocker.standin.server import DataDir

__all__ = ["SeededImage", "seed_v1_image", "seed_v1_image_in_blocks", "seed_v1_records"]


@dataclass(frozen=True)
class SeededImage:
    """A v1 image as an old cluster holds it: the collection and the names it is known by."""

    v1_id: str
    repo_tags: tuple[str, ...]
    owner_uuid: str
    collection: CollectionRef


def seed_v1_image(
    session: ArvadosSession,
    archive: Path,
    v1_id: str,
    repo_tags: tuple[str, ...] = (),
    owner_uuid: str | None = None,
    image_timestamp: str = "2015-11-20T10:00:00.000000000Z",
) -> SeededImage:
    """Upload ``archive`` as `<v1 id>.tar` with a docker_image_hash link and one repo+tag link per name."""
    owner = owner_uuid or str(session.api.users().current().execute()["uuid"])
    ref = upload_tar(
        session,
        archive,
        f"{v1_id}.tar",
        name=collection_name(v1_id, repo_tags[0] if repo_tags else None),
        owner_uuid=owner,
        properties={},
    )
    props = {"image_timestamp": image_timestamp}
    links = [LinkSpec(HASH_LINK, v1_id, ref.uuid, owner, properties=props)]
    links += [LinkSpec(REPO_TAG_LINK, name, ref.uuid, owner, properties=props) for name in repo_tags]
    create_links(session, links)
    return SeededImage(v1_id=v1_id, repo_tags=repo_tags, owner_uuid=owner, collection=ref)


def seed_v1_image_in_blocks(
    session: ArvadosSession,
    data: bytes,
    v1_id: str,
    repo_tags: tuple[str, ...] = (),
    *,
    block_sizes: tuple[int, ...] = (1_000_003, 777, 2_345_679, 65_537),
    shuffle_seed: int = 1,
    other_file: bytes = b"notes kept beside the image\n",
    owner_uuid: str | None = None,
) -> SeededImage:
    """Store ``data`` as `<v1 id>.tar` the way a hand-made or merged collection may: blocks of odd sizes (cycling
    through ``block_sizes``) listed in shuffled order, the file as several segments, and its last block shared with
    another file (``notes.txt``). Links as ``seed_v1_image``."""
    owner = owner_uuid or str(session.api.users().current().execute()["uuid"])
    keep = arvados.keep.KeepClient(api_client=session.api, num_retries=4)
    chunks: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        size = block_sizes[i % len(block_sizes)]
        chunks.append(data[pos : pos + size])
        pos += size
        i += 1
    blocks = [*chunks[:-1], chunks[-1] + other_file]  # the last block also holds the other file
    locators = [str(keep.put(b, copies=1)) for b in blocks]
    order = list(range(len(blocks)))
    random.Random(shuffle_seed).shuffle(order)
    at: dict[int, int] = {}
    stream_pos = 0
    for n in order:
        at[n] = stream_pos
        stream_pos += len(blocks[n])
    name = f"{v1_id}.tar"
    tokens = [f"{at[n]}:{len(c)}:{name}" for n, c in enumerate(chunks)]
    last = len(blocks) - 1
    tokens.append(f"{at[last] + len(chunks[-1])}:{len(other_file)}:notes.txt")
    manifest = f". {' '.join(locators[n] for n in order)} {' '.join(tokens)}\n"
    body = {
        "manifest_text": manifest,
        "name": collection_name(v1_id, repo_tags[0] if repo_tags else None),
        "owner_uuid": owner,
    }
    rec = session.api.collections().create(body=body, ensure_unique_name=True).execute()
    ref = CollectionRef(uuid=str(rec["uuid"]), pdh=str(rec["portable_data_hash"]), size=len(data))
    props = {"image_timestamp": "2015-11-20T10:00:00.000000000Z"}
    links = [LinkSpec(HASH_LINK, v1_id, ref.uuid, owner, properties=props)]
    links += [LinkSpec(REPO_TAG_LINK, name, ref.uuid, owner, properties=props) for name in repo_tags]
    create_links(session, links)
    return SeededImage(v1_id=v1_id, repo_tags=repo_tags, owner_uuid=owner, collection=ref)


def seed_v1_records(root: Path, images: int, migrated: int = 0, seed: int = 0) -> list[str]:
    """Write ``images`` v1 images straight into the stopped stand-in at ``root``; return the PDHs left to migrate.

    Each is one collection holding ``<v1 id>.tar`` (one shared tiny block), a docker_image_hash and a
    docker_image_repo+tag link, in two owners; the first ``migrated`` also get a system-owned migration link. Fast
    enough for thousands of images, for request-count tests and benchmarks (no Keep traffic, no running server).
    """
    layout = DataDir(root)
    store = layout.open_store()
    todo: list[str] = []
    try:
        blocks = layout.open_blocks()
        admin = store.authenticate(store.token("admin"))
        user = store.authenticate(store.token("user"))
        assert admin is not None and user is not None
        owners = [admin.user_uuid, user.user_uuid]
        content = b"v1 image stand-in bytes\n"
        md5 = blocks.put_bytes(content)
        rng = random.Random(seed)
        for i in range(images):
            v1_id = rng.randbytes(32).hex()
            owner = owners[i % 2]
            manifest = f". {md5}+{len(content)} 0:{len(content)}:{v1_id}.tar\n"
            coll = store.create_collection(
                admin,
                {"owner_uuid": owner, "name": f"Docker image bench/img{i}:v1 {v1_id[:12]}", "manifest_text": manifest},
            )
            props = {"image_timestamp": (dt.datetime(2015, 1, 1) + dt.timedelta(seconds=i)).isoformat() + "Z"}
            for link_class, name in ((HASH_LINK, v1_id), (REPO_TAG_LINK, f"bench/img{i}:v1")):
                link = {"link_class": link_class, "name": name, "head_uuid": coll, "properties": props}
                store.create_link(admin, {"owner_uuid": owner, **link})
            pdh = portable_data_hash(manifest)
            if i < migrated:
                # The tail is the old PDH; the head need not exist for discovery to skip the image.
                store.create_link(
                    admin,
                    {
                        "owner_uuid": store.system_user_uuid,
                        "link_class": MIGRATION_LINK,
                        "name": MIGRATION_LINK_NAME,
                        "tail_uuid": pdh,
                        "head_uuid": f"{'0' * 32}+{i}",
                    },
                )
            else:
                todo.append(pdh)
    finally:
        store.close()
    return todo
