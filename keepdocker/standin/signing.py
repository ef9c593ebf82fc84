"""Keep blob signatures: the real HMAC-SHA1 ``+A<sig>@<expiry>`` scheme, bound to the caller's token."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

__all__ = ["EMPTY_BLOCK_MD5", "BlobSigner", "SignatureError"]

EMPTY_BLOCK_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
_SIGNATURE_HINT_RE = re.compile(r"^A([0-9a-f]{40})@([0-9a-f]{1,8})$")


class SignatureError(Exception):
    """A locator's signature is missing, malformed, forged, or expired; ``reason`` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BlobSigner:
    """Signs and verifies block locators with one cluster key and TTL (seconds)."""

    key: bytes
    ttl_seconds: int = 1_209_600

    def signature(self, md5: str, token: str, expiry: int) -> str:
        """The 40-hex HMAC-SHA1 over ``md5@token@expiry_hex@ttl_hex``, exactly as keepstore computes it."""
        msg = f"{md5}@{token}@{expiry:08x}@{self.ttl_seconds:x}"
        return hmac.new(self.key, msg.encode(), hashlib.sha1).hexdigest()

    def default_expiry(self, now: float | None = None) -> int:
        """Unix time at which a signature made now expires."""
        return int(now if now is not None else time.time()) + self.ttl_seconds

    def sign_locator(self, locator: str, token: str, expiry: int) -> str:
        """``locator`` with any ``+A`` hint replaced by a fresh signature for ``token``."""
        parts = locator.split("+")
        kept = [p for p in parts[2:] if not p.startswith("A")]
        sig = self.signature(parts[0], token, expiry)
        return "+".join([parts[0], parts[1], *kept, f"A{sig}@{expiry:08x}"])

    def verify_locator(self, locator: str, token: str, now: float | None = None) -> None:
        """Raise SignatureError unless ``locator`` carries a valid, unexpired signature for ``token``.

        The empty block needs no signature.
        """
        parts = locator.split("+")
        md5 = parts[0]
        hints = [p for p in parts[2:] if p.startswith("A")]
        if not hints:
            if md5 == EMPTY_BLOCK_MD5:
                return
            raise SignatureError("missing", f"locator {locator} has no +A permission signature")
        match = _SIGNATURE_HINT_RE.match(hints[0])
        if match is None:
            raise SignatureError("invalid", f"locator {locator} has a malformed +A permission signature")
        sig, expiry_hex = match.groups()
        expiry = int(expiry_hex, 16)
        expected = self.signature(md5, token, expiry)
        if not hmac.compare_digest(sig, expected):
            raise SignatureError(
                "invalid", f"locator {locator} has a permission signature that is not valid for this token"
            )
        if expiry < (now if now is not None else time.time()):
            raise SignatureError("expired", f"locator {locator} has an expired permission signature")
