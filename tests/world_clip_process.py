"""The tests' quick world CLIP, trained once per test session.

Under pytest-xdist each worker is its own session, so a session fixture that trains ran once per
worker: two trainings of the same CLIP side by side (about 200 s each on a fresh clone). Instead
the process that runs the session (pytest-xdist's controller, otherwise idle) starts this module in
a child process as soon as pytest is configured and announces its folder in
``$NEURFLOW_TEST_WORLD_CLIP_DIR``; the workers' fixture waits for ``ready.json`` or ``error.txt``
there. A run without the variable (no xdist, or one test file) trains in the fixture itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.collected import collected_paths

ENV_DIR = "NEURFLOW_TEST_WORLD_CLIP_DIR"
#: the ResNet tower at the demo's budget: zero-shot top-1 1.000 on this world's 159 held-out part crops
#: in 52 s of one thread, where the ViT tower at 400 steps of 96 took 171 s for 0.994 (side by side)
QUICK = {"steps": 200, "batch_size": 48, "arch": "resnet"}
TIMEOUT_S = 1800
REPO = Path(__file__).resolve().parents[1]
USERS = ("labeler", "world")  # the test packages whose files use the world CLIP


class WorldClipUnavailable(RuntimeError):
    """The quick world CLIP could not be trained; the message carries the child's log."""


def build(root: Path) -> tuple[Path, Path]:
    """A small world under ``root`` and the quick CLIP trained on it: (world root, bundle folder)."""
    from neurflow.world.clip import TrainConfig, ensure_world_clip
    from neurflow.world.generate import generate_world

    generate_world(root, n_per_class={"train": 32, "heldout": 6}, seed=0, overwrite=True)
    return root, ensure_world_clip(root, TrainConfig(**QUICK), log=None)


def wait(folder: Path, timeout: float = TIMEOUT_S) -> tuple[Path, Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "ready.json").is_file():
            ready = json.loads((folder / "ready.json").read_text())
            return Path(ready["world"]), Path(ready["bundle"])
        if (folder / "error.txt").is_file():
            raise WorldClipUnavailable((folder / "error.txt").read_text())
        time.sleep(0.5)
    raise WorldClipUnavailable(f"the quick world CLIP was not ready after {timeout:.0f} s (see {folder})")


def wanted(config) -> bool:
    """Whether this run is split over xdist workers and collects a test package that uses the CLIP."""
    if not getattr(config.option, "numprocesses", None):
        return False
    users = [REPO / "tests" / name for name in USERS]
    return any(p == u or p in u.parents or u in p.parents for p in collected_paths(config) for u in users)


class EarlyStart:
    """The session's one background training, in a child process; its folder announced in the environment."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="neurflow-world-clip-"))
        os.environ[ENV_DIR] = str(self.folder)
        self.log = open(self.folder / "train.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.world_clip_process", str(self.folder)],
                                     cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.log.close()
        os.environ.pop(ENV_DIR, None)
        shutil.rmtree(self.folder, ignore_errors=True)


def _main(folder: Path) -> None:
    try:
        world, bundle = build(folder / "world")
    except BaseException as exc:  # noqa: BLE001 - reported to every test that needs it
        log = (folder / "train.log").read_bytes().decode(errors="replace")[-3000:] if (folder / "train.log").is_file() else ""
        (folder / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n{log}")
        raise
    tmp = folder / "ready.json.tmp"
    tmp.write_text(json.dumps({"world": str(world), "bundle": str(bundle)}))
    tmp.rename(folder / "ready.json")


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
