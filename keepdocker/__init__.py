"""keepdocker: Docker images in Arvados Keep; the Prefect-free core of keepdocker-flows."""

__version__ = "0.1.0"
