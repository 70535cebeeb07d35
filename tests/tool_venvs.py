"""The commands that make a tool's own venv for a test (Label Studio, datumaro): one tool, pinned.

``uv`` is used when the suite's venv has it (``make`` installs it): it fetches and unpacks in parallel,
where pip took about 110 CPU-seconds for Label Studio alone, beside the running tests. Without it,
``venv`` + pip.
"""

from __future__ import annotations

import sys
from pathlib import Path


def uv() -> Path | None:
    found = Path(sys.executable).parent / "uv"
    return found if found.is_file() else None


def install_steps(venv: Path, base_python: str, requirement: str, constraints: Path) -> list[list[str]]:
    """Create ``venv`` afresh with ``base_python`` and install ``requirement`` under ``constraints``."""
    python = str(venv / "bin" / "python")
    tool = uv()
    if tool is not None:
        return [[str(tool), "venv", "--quiet", "--clear", "--python", base_python, str(venv)],
                [str(tool), "pip", "install", "--quiet", "--python", python, "-c", str(constraints), requirement]]
    return [[base_python, "-m", "venv", "--clear", str(venv)],
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(constraints), requirement]]
