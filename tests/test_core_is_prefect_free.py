"""The core package never imports Prefect, so it stays usable (and fast to import) without it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "keepdocker"
# The layers above the core: it may be imported by them, never the other way round.
ABOVE = {"prefect", "flows", "tasks", "cli"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_core_module_names_prefect() -> None:
    """No module of the core package imports prefect, flows, tasks or the CLI."""
    offenders = {str(p.relative_to(CORE)): sorted(_imported_roots(p) & ABOVE) for p in CORE.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_core_module_loads_no_prefect() -> None:
    """Importing every core module leaves prefect out of sys.modules."""
    modules = sorted(
        ".".join(p.relative_to(CORE.parent).with_suffix("").parts).removesuffix(".__init__") for p in CORE.rglob("*.py")
    )
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_parser_loads_no_prefect() -> None:
    """The CLI (beside the core) builds its parser without Prefect, so `keepdocker upgrade` and `standin` start fast."""
    code = "import sys\nfrom cli.main import build_parser\nbuild_parser()\nprint('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tasks_never_import_flows() -> None:
    """Tasks take the core's typed requests, never a flow's parameters: no task module imports flows or the CLI."""
    tasks = CORE.parent / "tasks"
    offenders = {p.name: sorted(_imported_roots(p) & {"flows", "cli"}) for p in tasks.rglob("*.py")}
    assert len(offenders) > 5 and {k: v for k, v in offenders.items() if v} == {}
