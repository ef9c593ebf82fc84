"""Prefect tasks of keepdocker-flows: thin wrappers over the core that pass paths, digests, PDHs and UUIDs."""
