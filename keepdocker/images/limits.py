"""The fixed limits every archive reader enforces, so a hostile archive is refused within bounded memory and time.

Docker applies none of these except the chain depth; containers/image caps manifest.json at 1 MiB and configs at
4 MiB, and Go's archive/tar caps PAX and GNU long-name records at 1 MiB. Exceeding any limit raises
``ArchiveLimitError`` naming the entry and the limit. The values are deliberately generous for real images and
small enough that the worst case fits the 150 MB resident-memory budget of the upgrade.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

#: Size of one read or write when streaming member data (bounds every buffer in the pipeline).
CHUNK_BYTES = 1 * MIB

#: A v1 layer ``json``, ``repositories``, ``manifest.json``, ``index.json``, ``oci-layout`` (containers/image: 1 MiB).
MAX_JSON_BYTES = 1 * MIB
#: A v2 image config (containers/image ``MaxConfigBodySize``: 4 MiB).
MAX_CONFIG_BYTES = 4 * MIB
#: All metadata files of one archive held in memory together (layer jsons, repositories, configs).
MAX_TOTAL_METADATA_BYTES = 64 * MIB

#: Other small members kept while a v1 archive is read, in case a link names one as a json, layer.tar or repositories.
MAX_KEPT_OTHER_BYTES = 8 * MIB

#: Entries in the outer archive (a v1 layer uses 3 or 4: directory, VERSION, json, layer.tar).
MAX_OUTER_MEMBERS = 100_000
#: Top-level v1 layer directories in one archive.
MAX_V1_LAYERS = 10_000
#: Parent-chain length of one v1 image: Docker's layer store (``maxLayerDepth``, 125 up to Docker 24) refuses to
#: register a layer whose parent chain already holds 125 layers ("max depth exceeded"), so legacy load of a deeper
#: chain fails on every engine that can legacy-load, and its v2 archive would not load on Docker 24 or older.
MAX_CHAIN_DEPTH = 125
#: Symlink or hardlink hops followed when resolving an outer entry (Docker save writes one hop).
MAX_LINK_HOPS = 4

#: Entries in one layer tar (names are remembered, as 8-byte hashes, to check hardlink targets).
MAX_LAYER_MEMBERS = 1_000_000
#: Layer entry names remembered across the whole archive (8 bytes each once a layer is done).
MAX_TOTAL_LAYER_MEMBERS = 4_000_000
#: An entry name or link target (Linux PATH_MAX); longer names cannot be created by Docker's applier anyway.
MAX_NAME_BYTES = 4096
#: A PAX extended header or GNU long name/link record (Go's archive/tar ``maxSpecialFileSize``).
MAX_SPECIAL_BYTES = 1 * MIB

#: Decompressed bytes of one layer, and of one whole archive (outer stream or all layers together).
MAX_LAYER_BYTES = 64 * GIB
MAX_ARCHIVE_BYTES = 256 * GIB
#: Decompressed-to-compressed ratio allowed once a stream has produced more than RATIO_FREE_BYTES.
#: gzip cannot exceed about 1032:1, so only bzip2/xz bombs (or absurd gzip claims) hit this.
MAX_RATIO = 1100
RATIO_FREE_BYTES = 64 * MIB

#: JSON nesting accepted when reading manifests (Go's decoder limit is 10000).
MAX_JSON_DEPTH = 10_000
