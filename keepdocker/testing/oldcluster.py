"""Seed Arvados with v1 images stored the way a pre-Docker-1.10 cluster stored them (for tests, demo, benchmarks)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import arvados.keep

from keepdocker.arv.catalog import HASH_LINK, REPO_TAG_LINK, LinkSpec, collection_name, create_links
from keepdocker.arv.client import ArvadosSession
from keepdocker.arv.transfer import CollectionRef, upload_tar

__all__ = ["SeededImage", "seed_v1_image", "seed_v1_image_in_blocks"]


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
