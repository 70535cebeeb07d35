"""The distribution installs one import name: ``neurflow`` and nothing else at the top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: the build uses the venv's setuptools, so the test needs no network
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, text=True)
    (found,) = out.glob("neurflow-*.whl")
    return found


def test_wheel_holds_only_neurflow(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"neurflow"}
    # every layer and the data files it reads at run time travel in the wheel
    for needed in ("neurflow/core/engine.py", "neurflow/core/schemas/circuit.schema.json",
                   "neurflow/labeler/vocabularies/general.txt", "neurflow/prompts/group_caption.v1.txt",
                   "neurflow/viewer/static/viewer.js", "neurflow/service/http/app.py", "neurflow/world/spec.py",
                   "neurflow/exports/registry.py", "neurflow/cli/__init__.py", "neurflow/client/api.py"):
        assert needed in names, needed
    assert not any(name.startswith(("neurflow/tests", "neurflow/bench", "neurflow/demo")) for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "neurflow = neurflow.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_generic_names_are_not_importable_outside_the_repo(tmp_path):
    code = ("import importlib.util, neurflow, neurflow.core.engine; "
            "print([n for n in ('core', 'labeler', 'prompts', 'service', 'world') if importlib.util.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    import neurflow

    assert neurflow.__version__ == version("neurflow") != "0+unknown"
