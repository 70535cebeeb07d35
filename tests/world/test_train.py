"""The training loop and the cache, on a tiny world and a few steps; the real model is a slow test."""

from __future__ import annotations

import hashlib
import json
import time

import msgspec
import pytest
import torch

from neurflow.core.jobspec import ModelSpec
from neurflow.world.cache import cache_root, ensure_world, world_dir
from neurflow.world.spec import CLASSES, WorldConfig
from neurflow.world.train import TrainConfig, WorldModel, ensure_world_model, train_world_model

TINY_WORLD = WorldConfig(seed=3, image_size=(40, 36), splits={"train": 3, "heldout": 1})
# One full batch (24 images), no flips: every step sees the same data, so the loss must fall.
# threads=1: on a busy shared machine two torch threads are many times slower than one.
TINY_TRAIN = TrainConfig(input_size=32, batch_size=24, epochs=100, max_steps=8, lr=2e-3, hflip=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[WorldModel, float]:
    cache = tmp_path_factory.mktemp("cache")
    started = time.perf_counter()
    model = ensure_world_model(cache, TINY_WORLD, TINY_TRAIN, progress=False, threads=1)
    return model, time.perf_counter() - started


def test_training_writes_weights_and_metadata(tiny_model):
    model, _ = tiny_model
    assert model.world_root == world_dir(TINY_WORLD, model.world_root.parent)
    assert model.directory.parent == model.world_root
    assert model.weights.is_file() and model.meta_path.is_file()
    meta = json.loads(model.meta_path.read_text())
    assert meta["arch"] == "torchvision:resnet18" and meta["num_classes"] == 8 and meta["input_size"] == 32
    assert meta["class_names"] == [c.name for c in CLASSES]
    assert meta["steps"] == 8 and len(meta["losses"]) == 8
    assert all(0 < v < 1 for v in meta["mean"] + meta["std"]) and len(meta["mean"]) == 3
    assert 0.0 <= meta["heldout_accuracy"] <= 1.0
    assert meta["world"] == TINY_WORLD.to_json() and meta["train"]["max_steps"] == 8
    assert meta["weights_sha256"] == hashlib.sha256(model.weights.read_bytes()).hexdigest()
    assert meta["train_seconds"] > 0


def test_loss_decreases(tiny_model):
    losses = tiny_model[0].meta["losses"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses


def test_weights_load_into_torchvision_resnet18(tiny_model):
    model, _ = tiny_model
    net = model.load_model()
    with torch.no_grad():
        logits = net(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 8)
    spec = msgspec.convert(model.model_spec(), ModelSpec)  # usable as a job spec's model section
    assert spec.arch == "torchvision:resnet18" and spec.weights == str(model.weights)


def test_second_call_is_a_cache_hit(tiny_model):
    model, _ = tiny_model
    stamp = model.meta_path.stat().st_mtime_ns
    started = time.perf_counter()
    again = ensure_world_model(model.world_root.parent, TINY_WORLD, TINY_TRAIN, progress=False, threads=1)
    assert time.perf_counter() - started < 1.0
    assert again.directory == model.directory and again.weights_sha256 == model.weights_sha256
    assert again.meta_path.stat().st_mtime_ns == stamp


def test_retraining_is_deterministic_and_keeps_caller_state(tiny_model):
    model, _ = tiny_model
    torch.manual_seed(123)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    retrained = train_world_model(model.world_root.parent, TINY_WORLD, TINY_TRAIN, progress=False, threads=1)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads and retrained.meta["threads"] == 1
    assert retrained.directory == model.directory
    assert retrained.meta["losses"] == model.meta["losses"]
    assert retrained.weights_sha256 == model.weights_sha256


def test_other_config_other_cache_entry(tiny_model):
    model, _ = tiny_model
    other = TrainConfig(**{**TINY_TRAIN.__dict__, "seed": 1})
    assert other.key() != TINY_TRAIN.key()
    assert WorldConfig(seed=4).key() != WorldConfig(seed=3).key()
    assert WorldConfig().key() == WorldConfig().key()


def test_cache_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURFLOW_CACHE", str(tmp_path / "env-cache"))
    assert cache_root() == tmp_path / "env-cache"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    config = WorldConfig(seed=5, image_size=(32, 32), splits={"train": 1})
    root = ensure_world(config)
    assert root.parent == tmp_path / "env-cache" and (root / "world.json").is_file()
    assert len(list((root / "images" / "train").rglob("*.png"))) == 8
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".world") and p.is_dir()]  # no temp left


def test_empty_world_cannot_train(tmp_path):
    empty = WorldConfig(seed=9, image_size=(32, 32), splits={"train": 0})
    with pytest.raises(ValueError, match="at least 2"):
        ensure_world_model(tmp_path, empty, TINY_TRAIN, progress=False, threads=1)
    assert not list(world_dir(empty, tmp_path).glob("model-*"))  # nothing half-built left behind


def test_a_fine_tune_starts_from_its_weights_and_is_keyed_by_their_content(tiny_model, tmp_path):
    import shutil

    from safetensors.torch import load_file

    model, _ = tiny_model
    assert TrainConfig().key() == "96cbb4e8c3a0"  # no init: the keys (and caches) of earlier models stand
    fine = TrainConfig(**{**TINY_TRAIN.__dict__, "max_steps": 1, "lr": 1e-7, "init": str(model.weights)})
    assert fine.key() != TrainConfig(**{**fine.__dict__, "init": None}).key()
    copy = tmp_path / "elsewhere"
    shutil.copytree(model.directory, copy)
    assert TrainConfig(**{**fine.__dict__, "init": str(copy / model.weights.name)}).key() == fine.key()
    tuned = ensure_world_model(tmp_path / "cache", TINY_WORLD, fine, progress=False, threads=1)
    assert tuned.meta["mean"] == model.meta["mean"] and tuned.meta["std"] == model.meta["std"]
    before, after = load_file(str(model.weights)), load_file(str(tuned.weights))
    # one step at a tiny learning rate: the fine-tune is still its starting network (from scratch it is not)
    assert max(float((before[k].float() - after[k].float()).abs().max()) for k in before if "running" not in k
               and "num_batches" not in k) < 1e-3
