"""Which paths a pytest run collects: what the session-start helpers (tests/conftest.py) ask before
starting work in the background that only some test files need."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def collected_paths(config) -> list[Path]:
    """The run's path arguments (node ids cut to their file), else the configured testpaths, resolved."""
    args = [a.split("::")[0] for a in config.args] or [str(REPO / p) for p in config.getini("testpaths")]
    return [(Path(config.invocation_params.dir) / a).resolve() for a in args]
