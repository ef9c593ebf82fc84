"""The one error type handlers raise: an HTTP status (always 4xx for permanent conditions) and a message."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """A request the stand-in refuses; ``status`` is the HTTP code, the message goes into ``errors``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
