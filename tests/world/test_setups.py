"""World setups: the demo's own configs, and a network and a CLIP built side by side, once."""

from __future__ import annotations

import json
import os
import time

import pytest

from neurflow.world import clip, setups, train
from neurflow.world.setups import DEMO, WorldSetup, ensure_setup
from neurflow.world.spec import WorldConfig

TINY = WorldSetup(
    world=WorldConfig(seed=5, image_size=(40, 36), splits={"train": 2, "heldout": 1}),
    model=train.TrainConfig(input_size=32, batch_size=16, max_steps=2, hflip=False),
    clip=clip.TrainConfig(steps=2, batch_size=8),
)


def test_demo_has_its_own_entries_beside_the_standard_world():
    """The bench, the slow tests and the docs measure the standard world; the demo must not move them."""
    standard = WorldSetup()
    assert DEMO.world.key() != standard.world.key()
    assert DEMO.clip.key() != standard.clip.key()
    assert DEMO.world.variant == "standard" and DEMO.world.image_size == standard.world.image_size
    assert DEMO.model.input_size == standard.model.input_size  # the engine sees demo images as it sees the bench's


def test_network_and_clip_are_built_side_by_side_then_reused(tmp_path):
    model, bundle = ensure_setup(TINY, tmp_path, progress=False)
    assert model.directory == train.model_dir(model.world_root, TINY.model)
    assert model.meta["steps"] == 2 and model.meta["threads"] == 1  # one torch thread, beside the CLIP
    assert bundle == clip.bundle_dir(model.world_root, TINY.clip)
    metrics = json.loads((bundle / clip.METRICS_FILE).read_text())
    assert metrics["train_config"]["steps"] == 2 and metrics["n_crops"] > 0
    stamps = (model.meta_path.stat().st_mtime_ns, (bundle / clip.METRICS_FILE).stat().st_mtime_ns)
    started = time.perf_counter()
    again = ensure_setup(TINY, tmp_path, progress=False)
    assert time.perf_counter() - started < 2.0
    assert (again[0].directory, again[1]) == (model.directory, bundle)
    assert (again[0].meta_path.stat().st_mtime_ns, (again[1] / clip.METRICS_FILE).stat().st_mtime_ns) == stamps


def test_without_clip_only_the_network_is_trained(tmp_path):
    model, bundle = ensure_setup(TINY, tmp_path, progress=False, with_clip=False)
    assert bundle is None and model.weights.is_file()
    assert not list(model.world_root.glob("world-clip-*"))


class _Job:
    def __init__(self) -> None:
        self.finished = False

    def done(self) -> bool:
        return self.finished


@pytest.mark.parametrize("idle, expected", [(0, 1), (1, 2), (7, os.cpu_count() or 1)])
def test_the_network_takes_the_idle_cores_once_the_clip_beside_it_is_done(monkeypatch, idle, expected):
    asked = []
    monkeypatch.setattr(setups, "idle_cores", lambda: asked.append(1) or idle)
    job = _Job()
    threads = setups._ThreadsBeside(job)
    assert threads() == 1 and not asked  # the CLIP still trains on the other core
    job.finished = True
    assert threads() == min(expected, os.cpu_count() or 1) and threads() == threads()
    assert len(asked) == 1  # sampled once, when the CLIP is done
