"""The world CLIP's two image towers (ViT, ResNet) and the label suite's world definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from neurflow.world.clip import ARCHS, TrainConfig, bundle_dir, clip_spec, ensure_world_clip
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
    assert len({(w.variant, w.seed) for w in SUITE.values()}) == len(SUITE)  # every variant and seed in one world
    for w in SUITE.values():
        assert w.config.variant == w.variant and set(w.classes) <= set(range(len(w.config.classes)))


def test_noisy_clip_confuses_a_share_of_the_parts_per_tower():
    from neurflow.world.clip import confusions

    parts = [f"part {i}" for i in range(13)]
    assert confusions(parts, TrainConfig()) == {}  # a clean CLIP names every part by its own name
    vit = confusions(parts, TrainConfig(confused_share=0.35))
    assert len(vit) == 5 and all(a != b and b in parts for a, b in vit.items())
    assert vit == confusions(list(reversed(parts)), TrainConfig(confused_share=0.35))  # fixed by seed, not order
    assert vit != confusions(parts, TrainConfig(confused_share=0.35, arch="resnet"))  # the towers err differently
    assert TrainConfig(confused_share=0.1).key() != TrainConfig().key()
    with pytest.raises(ValueError, match="confused_share and confusion_rate are shares in"):
        TrainConfig(confused_share=1.5)


def test_noisy_clip_records_what_it_confuses(tmp_path):
    from neurflow.world.clip import confusions
    from neurflow.world.ground_truth import World

    root = tmp_path / "standard"
    generate_world(root, n_per_class={"train": 1, "heldout": 1}, seed=2)
    base = TrainConfig(steps=2, batch_size=16)
    config = TrainConfig(steps=2, batch_size=16, confused_share=0.2, base=base)
    assert config.key() != TrainConfig(steps=2, batch_size=16, confused_share=0.2).key()  # the base is part of its identity
    metrics = json.loads((ensure_world_clip(root, config, log=None) / "metrics.json").read_text())
    assert (bundle_dir(root, base) / "metrics.json").is_file()  # the base was trained first, then fine-tuned
    with pytest.raises(ValueError, match="fine-tunes a base of its own tower"):
        TrainConfig(arch="resnet", base=base)
    world = World.load(root)
    expected = confusions([world.part_names[k] for k in sorted(world.part_names)], config)
    assert metrics["confusions"] == expected and len(expected) == 3


def test_suite_noisy_qualities_come_with_both_towers():
    from neurflow.world.suite import CLIP_QUALITIES, NOISY_TOWERS, noisy_clip_config

    assert len(CLIP_QUALITIES) >= 3 and set(NOISY_TOWERS) == set(ARCHS)
    shares = [noisy_clip_config(q, "vit").confused_share for q in CLIP_QUALITIES]
    assert shares == sorted(shares) and shares[0] > 0  # better quality, fewer misnamed parts
    with pytest.raises(ValueError, match="unknown CLIP quality 'q99'; choose from"):
        noisy_clip_config("q99", "vit")
