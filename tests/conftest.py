"""Fixtures shared across the test packages: a small generated world and a CLIP trained on it.

The world CLIP is the cached bundle of the standard world when one exists (``neurflow world-clip``
has run), else a quick one (ResNet tower, 200 steps) trained on a small world once per session
(``tests/world_clip_process.py``). Circuits are cut from the *heldout* split, which no CLIP saw
during training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in these tests may reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch (OpenMP) thread in every process of the suite, the servers, workers and commands it starts
# included (they inherit the environment): two pytest workers on two cores already fill the machine,
# and every extra thread spin-waits for a core that another process holds (CLIP inference on two
# busy cores: 256 patches in 5.2 s with two threads, 0.3 s with one). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_LABEL_STUDIO = None
_WORLD_CLIP = None


def pytest_configure(config):
    """Start the live test's Label Studio in the background now (installing and migrating it takes
    minutes that the other tests hide); only the process that runs the session does, pytest-xdist's
    workers inherit where to find it (``tests/exports/labelstudio_process.py``)."""
    global _LABEL_STUDIO, _WORLD_CLIP
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    from tests import world_clip_process
    from tests.exports.labelstudio_process import ENV_DIR, EarlyStart, wanted

    if ENV_DIR not in os.environ and wanted(config):
        _LABEL_STUDIO = EarlyStart()
    if (world_clip_process.ENV_DIR not in os.environ and world_clip_process.wanted(config)
            and (_quick_clip_forced() or _cached_standard() is None)):
        _WORLD_CLIP = world_clip_process.EarlyStart()


def pytest_collection_modifyitems(config, items):
    """Files with a ``slow`` test first, then those with an ``integration`` test (they start servers),
    each file's own order kept: pytest-xdist hands out whole files in this order (``--dist loadfile
    --no-loadscope-reorder``, the Makefile), longest first, so that the doc pages' examples (about
    two minutes) or the Ray executor's tests started last do not leave the other worker idle at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    server_files = {item.path for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: (item.path not in slow_files, item.path not in server_files))  # stable


def pytest_unconfigure(config):
    global _LABEL_STUDIO, _WORLD_CLIP
    for started in (_LABEL_STUDIO, _WORLD_CLIP):
        if started is not None:
            started.close()
    _LABEL_STUDIO = _WORLD_CLIP = None


@dataclass(frozen=True)
class WorldClip:
    world: Path  # world root
    bundle: Path  # world-CLIP bundle folder
    metrics: dict

    @property
    def heldout_images(self) -> Path:
        return self.world / "images" / "heldout"

    def labeling(self, **overrides) -> dict:
        from neurflow.world.clip import labeling_section

        return labeling_section(self.bundle, **overrides)


def _cached_standard() -> WorldClip | None:
    import json

    from neurflow.world.cache import world_dir
    from neurflow.world.spec import WorldConfig
    from neurflow.world.clip import TrainConfig

    root = world_dir(WorldConfig())
    bundle = root / f"world-clip-{TrainConfig().key()}"
    if (root / "world.json").is_file() and (bundle / "metrics.json").is_file():
        return WorldClip(root, bundle, json.loads((bundle / "metrics.json").read_text()))
    return None


def _quick_clip_forced() -> bool:
    return os.environ.get("NEURFLOW_TEST_QUICK_CLIP") == "1"


@pytest.fixture(scope="session")
def world_clip(tmp_path_factory) -> WorldClip:
    if not _quick_clip_forced():
        cached = _cached_standard()
        if cached is not None:
            return cached
    import json

    from tests import world_clip_process

    announced = os.environ.get(world_clip_process.ENV_DIR)
    if announced:  # trained once for the whole session (tests/world_clip_process.py)
        try:
            root, bundle = world_clip_process.wait(Path(announced))
        except world_clip_process.WorldClipUnavailable as exc:
            pytest.fail(str(exc))
    else:
        root, bundle = world_clip_process.build(tmp_path_factory.mktemp("world"))
    return WorldClip(root, bundle, json.loads((bundle / "metrics.json").read_text()))


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory) -> dict:
    """A random tiny open_clip model: its config JSON and checkpoint (no training, just plumbing)."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from neurflow.labeler.clip_model import register_model_config

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    root = tmp_path_factory.mktemp("tinyclip")
    (root / "tiny-test-clip.json").write_text(json.dumps(cfg))
    register_model_config("tiny-test-clip", cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip")
    save_file(model.state_dict(), str(root / "tiny.safetensors"))
    bundle = root / "bundle"
    bundle.mkdir()
    (bundle / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    save_file(model.state_dict(), str(bundle / "open_clip_model.safetensors"))
    return {"config": root / "tiny-test-clip.json", "weights": root / "tiny.safetensors", "bundle": bundle, "cfg": cfg, "name": "tiny-test-clip"}
