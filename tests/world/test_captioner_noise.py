"""Noisy world captioners: some parts learned under another part's name, recorded, keyed apart from
clean captioners (whose keys stay what they were)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from neurflow.world.captioner import WORDINGS, CaptionerTrainConfig, train_world_captioner
from neurflow.world.clip import TrainConfig, confusions, confused_names
from neurflow.world.generate import generate_world


def test_a_clean_captioner_keeps_its_key_and_a_noisy_one_gets_its_own():
    roots = [Path("/x/standard")]
    clean = CaptionerTrainConfig()
    fields = {k: v for k, v in asdict(clean).items() if k not in ("confused_share", "confusion_rate", "wording")}
    before = hashlib.sha256(json.dumps({"cfg": fields, "worlds": ["standard"]}, sort_keys=True).encode()).hexdigest()[
        :12
    ]
    assert clean.key(roots) == before
    assert CaptionerTrainConfig(confused_share=0.3).key(roots) not in (
        before,
        CaptionerTrainConfig(confused_share=0.2).key(roots),
    )
    assert CaptionerTrainConfig(wording="reversed").key(roots) != before
    assert WORDINGS["reversed"]("red circle") == "circle red" and WORDINGS["reversed"]("house") == "house"
    with pytest.raises(ValueError, match="confused_share and confusion_rate are shares in"):
        CaptionerTrainConfig(confusion_rate=2.0)
    with pytest.raises(ValueError, match="unknown captioner wording 'pig latin'"):
        CaptionerTrainConfig(wording="pig latin")


def test_confused_names_are_drawn_from_the_salt_so_captioners_and_clips_err_apart():
    parts = [f"part {i}" for i in range(13)]
    a = confused_names(parts, 0.3, "captioner:0:w")
    assert len(a) == 4 and all(x != y and y in parts for x, y in a.items())
    assert a == confused_names(list(reversed(parts)), 0.3, "captioner:0:w") and confused_names(parts, 0.0, "s") == {}
    assert confusions(parts, TrainConfig(confused_share=0.3)) == confused_names(
        parts, 0.3, "0:vit"
    )  # the CLIPs' draws kept
    assert a != confused_names(parts, 0.3, "0:vit")


def test_a_noisy_captioner_records_the_parts_it_learned_under_other_names(tmp_path):
    from neurflow.world.ground_truth import World

    root = tmp_path / "standard"
    generate_world(root, n_per_class={"train": 2, "heldout": 1}, seed=3)
    config = CaptionerTrainConfig(steps=2, batch=8, pool=16, confused_share=0.3)
    metrics = train_world_captioner([root], tmp_path / "captioner", config, log=None)
    world = World.load(root)
    parts = [world.part_names[k] for k in sorted(world.part_names)]
    assert metrics["renamed"] == confused_names(parts, 0.3, f"captioner:0:{root.name}") and metrics["renamed"]
    clean = train_world_captioner([root], tmp_path / "clean", CaptionerTrainConfig(steps=2, batch=8, pool=16), log=None)
    assert clean["renamed"] == {}
