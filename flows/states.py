"""Final flow-run states that carry the answer: the result's one-line summary, or the one-line reason it failed.

`prefect deployment run --watch` and the UI show a run's state message; `keepdocker deployment-run` prints it.
Prefect uses a state a flow returns as the run's final state and still gives a direct caller the result (or raises
the failure's exception), so the flows keep their typed results and callers their exceptions.
"""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.states import Completed, Failed

from keepdocker.errors import KeepdockerError

__all__ = ["completed", "failed"]

R = TypeVar("R")


def completed(result: R, message: str) -> R:
    """``result`` in a Completed state whose message is ``message`` (Prefect unwraps it for direct callers)."""
    return cast(R, Completed(data=result, message=message))


def failed(exc: KeepdockerError, result_type: type[R]) -> R:
    """A Failed state whose message is the error's one line; direct callers get ``exc`` raised, as before."""
    del result_type  # only tells the type checker what the flow returns on success
    return cast(R, Failed(data=exc, message=exc.message))
