"""A local server that speaks the Arvados API and the Keep protocol well enough for the real SDK commands.

Run it with `keepdocker standin`; use :class:`Standin` in-process, or ``keepdocker.testing.standin`` from tests.
"""

from keepdocker.standin.server import DataDir, Standin, StandinConfig, default_data_dir, format_env
from keepdocker.standin.store import Caller, SeededImage, Store

__all__ = ["Caller", "DataDir", "SeededImage", "Standin", "StandinConfig", "Store", "default_data_dir", "format_env"]
