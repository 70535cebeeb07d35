"""The world CLIP's two image towers (ViT, ResNet) and the label suite's world definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from neurflow.world.clip import ARCHS, TrainConfig, clip_spec, ensure_world_clip
from neurflow.world.generate import generate_world
from neurflow.world.suite import SUITE


def test_vit_bundle_keys_predate_tower_choice():
    """Cached ViT bundles (demo, tests) keep their folder names."""
    assert TrainConfig().key() == "85ad5fd0a303"
    assert TrainConfig(arch="resnet").key() != TrainConfig().key()
    assert set(ARCHS) == {"vit", "resnet"}
    assert isinstance(ARCHS["resnet"][1]["vision_cfg"]["layers"], list)  # open_clip's ModifiedResNet


def test_unknown_tower_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown world-CLIP image tower 'swin'; choose from"):
        TrainConfig(arch="swin")


def test_resnet_tower_trains_and_loads_as_a_labeling_clip(tmp_path):
    from neurflow.labeler.clip_model import load_clip

    root = tmp_path / "objects"
    generate_world(root, n_per_class={"train": 2, "heldout": 1}, seed=1, variant="objects")
    bundle = ensure_world_clip(root, TrainConfig(steps=3, batch_size=16, arch="resnet"), log=None)
    spec = clip_spec(bundle)
    assert spec["model"] == "neurflow-world-clip-rn"
    config = json.loads((bundle / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["layers"] == [1, 1, 1, 1]
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["n_crops"] > 0 and 0.0 <= metrics["zero_shot_top1"] <= 1.0
    vocabulary = (bundle / "vocabulary.txt").read_text()
    assert "house" in vocabulary and "red circle" not in vocabulary  # the world's own parts
    clip = load_clip(spec)
    emb = clip.encode_images([Image.new("RGB", (30, 30), (200, 60, 50))])
    assert emb.shape == (1, 64) and np.isclose(np.linalg.norm(emb), 1.0, atol=1e-4)


def test_suite_has_dev_and_held_out_worlds_of_both_towers():
    roles = {w.role for w in SUITE.values()}
    assert roles == {"dev", "held-out"}
    for role in roles:
        assert {w.clip_arch for w in SUITE.values() if w.role == role} == {"vit", "resnet"}
    assert len({w.variant for w in SUITE.values()}) == len(SUITE)  # every variant in one world
    for w in SUITE.values():
        assert w.config.variant == w.variant and set(w.classes) <= set(range(len(w.config.classes)))
