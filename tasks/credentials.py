"""The `arvados-credentials` Prefect block: API host, token (a secret) and insecure flag, chosen by name per run.

Register the type once per server (`prefect block register -m tasks.credentials`; `prefect deploy` of
deployments/prefect.yaml does it too), then create blocks in the UI (Blocks > Arvados Credentials) or in Python:
``ArvadosCredentials(host=..., token=...).save("arvados-prod")``. The server stores the token encrypted; the UI,
the API and logs show it masked.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from keepdocker.arv.client import ArvadosConfig

__all__ = ["ArvadosCredentials"]


class ArvadosCredentials(Block):
    """Where and as whom flows reach Arvados, instead of the worker's ARVADOS_* environment."""

    _block_type_name = "Arvados Credentials"
    _block_type_slug = "arvados-credentials"
    _description = "Arvados API host, token and TLS setting for keepdocker flows (parameter credentials_block)."

    host: str = Field(
        title="API host",
        description="ARVADOS_API_HOST: the API server's host[:port], e.g. zzzzz.example.org.",
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9.\[\]:-]+$",
    )
    token: SecretStr = Field(title="API token", description="ARVADOS_API_TOKEN (stored encrypted, shown masked).")
    insecure: bool = Field(
        default=False,
        title="Skip TLS verification",
        description="ARVADOS_API_HOST_INSECURE: accept a self-signed certificate (test clusters only).",
    )

    def config(self) -> ArvadosConfig:
        """The connection settings this block holds."""
        return ArvadosConfig(host=self.host, token=self.token.get_secret_value(), insecure=self.insecure)
