"""The `keepdocker` command line: parses arguments, runs one command, turns errors into exit codes.

This is the only module that calls ``sys.exit``. Commands live in ``cli.commands``; the ones that run
flows import Prefect lazily, so `keepdocker upgrade` and `keepdocker standin` start fast and need no Prefect API.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cli.console import console_progress
from keepdocker.errors import KeepdockerError, UsageError
from keepdocker.options import use_cli_spelling, uses_cli_spelling

# Each module has add_parser(subparsers) that sets `func(args) -> int` on its parser.
COMMANDS = ("standin", "upgrade", "push", "images", "history", "migrate", "demo", "deployment_run")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="keepdocker",
        description="Put Docker images into Arvados Keep and migrate v1 images to v2.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cli.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code; errors become one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = uses_cli_spelling()
    use_cli_spelling()  # hints name --flags and IMAGE/TAG, as typed here, not flow parameters
    try:
        with console_progress(quiet=getattr(args, "quiet", False)):
            code: int = args.func(args)
    except KeepdockerError as exc:
        print(f"keepdocker {args.command}: error: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        print(f"keepdocker {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        use_cli_spelling(previous)  # a caller in the same process (a test, an embedding program) keeps its own
    return code


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
