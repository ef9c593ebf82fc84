"""How messages name an option: as the caller spells it, a CLI flag (`--pull`) or a flow parameter (`pull=true`).

A hint is only useful in the form the reader can type. Flow runs (deployments, the UI) take parameters; the
`keepdocker` command takes flags and positional arguments. The command line calls :func:`use_cli_spelling` once at
start-up, before it runs anything; every other process (a worker's flow run, a test) keeps the parameter spelling.
"""

from __future__ import annotations

__all__ = ["field", "setting", "use_cli_spelling", "uses_cli_spelling"]

# Options the CLI takes as positional arguments, named as its usage line names them.
_POSITIONAL = {"image": "IMAGE", "tag": "TAG"}
# Options the CLI spells differently from the parameter (repeatable flags).
_CLI_NAMES = {"pdhs": "--pdh"}

_cli_spelling = False


def use_cli_spelling(enabled: bool = True) -> None:
    """Name options as the `keepdocker` command line does, for the rest of this process."""
    global _cli_spelling
    _cli_spelling = enabled


def uses_cli_spelling() -> bool:
    """True when messages name options as CLI flags."""
    return _cli_spelling


def field(name: str) -> str:
    """The option ``name`` (a parameter name such as ``project_uuid``) as the caller spells it."""
    if not _cli_spelling:
        return name
    return _POSITIONAL.get(name) or _CLI_NAMES.get(name) or "--" + name.replace("_", "-")


def setting(name: str, value: bool | int | str = True) -> str:
    """How the caller sets option ``name`` to ``value``: ``--pull`` / ``pull=true``, ``--limit 5`` / ``limit=5``."""
    if _cli_spelling:
        flag = field(name)
        if value is True:
            return flag
        return f"{flag} {value}"
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{name}={shown}"
