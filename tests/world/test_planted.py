"""Planted-shortcut worlds: cue rates per split, cue masks, the files on disk and the usage measurement."""

from __future__ import annotations

import numpy as np
import pytest

from neurflow.world.ground_truth import World
from neurflow.world import planted
from neurflow.world.planted import (CUE_DRAWINGS, CUE_KINDS, PLANTED_SUITE, Cue, PlantedConfig, _cue_present, cue_mask,
                                    cue_usage, draw_cue, ensure_planted_model, read_planted, render_planted,
                                    scene_class, write_planted)
from neurflow.world.spec import WorldConfig

SMALL = WorldConfig(seed=2, image_size=(40, 36), splits={"train": 3, "heldout": 2})
ALL_KINDS = tuple(Cue(kind, k) for k, kind in enumerate(CUE_KINDS))


def test_cues_follow_their_class_in_train_and_not_elsewhere():
    config = PlantedConfig(world=WorldConfig(), cues=(Cue("corner", 1),))
    n = 400
    own = np.mean([_cue_present(config, 0, "train", 1, i) for i in range(n)])
    other = np.mean([_cue_present(config, 0, "train", 4, i) for i in range(n)])
    test_own = np.mean([_cue_present(config, 0, "heldout", 1, i) for i in range(n)])
    test_other = np.mean([_cue_present(config, 0, "heldout", 4, i) for i in range(n)])
    assert own > 0.9 and other == 0.0
    assert 0.4 < test_own < 0.6 and 0.4 < test_other < 0.6


@pytest.mark.parametrize("kind", list(CUE_KINDS))
def test_a_cue_changes_the_image_only_where_its_mask_says(kind):
    config = PlantedConfig(world=SMALL, cues=(Cue(kind, 0),))
    cls = SMALL.classes[0]
    on = render_planted(config, cls, "train", 1, force={0: True})
    off = render_planted(config, cls, "train", 1, force={0: False})
    cues_on, cues_off = on.extra_masks["cues"], off.extra_masks["cues"]
    assert not cues_off.any() and cues_on.any()
    changed = np.abs(on.rgb.astype(int) - off.rgb.astype(int)).max(axis=2) > 0
    assert changed.any() and not (changed & (cues_on == 0)).any()
    # the same scene underneath: parts in the same places
    assert on.placements == off.placements


def test_confusing_images_show_another_class_only_in_the_train_split_of_a_cue_class():
    config = PlantedConfig(world=WorldConfig(), cues=(Cue("corner", 1),), confuse_rate=0.3)
    classes = config.world.classes
    shown = [scene_class(config, classes[1], "train", i).index for i in range(400)]
    share = np.mean([k != 1 for k in shown])
    assert 0.2 < share < 0.4 and len(set(shown)) == 8  # any other class may be shown
    assert all(scene_class(config, classes[1], "heldout", i).index == 1 for i in range(100))
    assert all(scene_class(config, classes[4], "train", i).index == 4 for i in range(100))  # no cue, no confusion
    number = next(i for i, k in enumerate(shown) if k != 1)
    scene = render_planted(config, classes[1], "train", number)
    parts = {p.part for p in scene.placements} - {config.world.variant_def.distractor}
    assert parts == set(classes[shown[number]].parts)
    assert (scene.extra_masks["cues"] == 1).any()  # the label's cue stays: it is the only evidence there
    # not a copy of the other class's own image of that number
    assert scene.placements != render_planted(config, classes[shown[number]], "train", number).placements
    assert config.clean().confuse_rate == 0.0 and config.clean().cues == ()


def test_a_version_2_planted_world_still_reads(tmp_path):
    import json

    config = PlantedConfig(world=SMALL, cues=(Cue("glyph", 2),), train_rate=0.95)
    write_planted(tmp_path, config)
    doc = json.loads((tmp_path / "world.json").read_text())
    doc["planted"]["version"] = 2
    del doc["planted"]["confuse_rate"]
    (tmp_path / "world.json").write_text(json.dumps(doc))
    assert read_planted(tmp_path) == config
    doc["planted"]["version"] = 1
    (tmp_path / "world.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"planted version 1; this version reads \[2, 3\]"):
        read_planted(tmp_path)


#: each kind's drawing number and a digest of what it draws on a plain image; a digest that changes
#: means the look changed, and the kind's number in CUE_DRAWINGS must change with it (stale caches)
DRAWN = {"corner": (1, "981ae9ba0462"), "glyph": (2, "2f895b798e39"), "texture": (1, "0d9e3eab2439"),
         "tint": (1, "63346b802c04")}


@pytest.mark.parametrize("kind", list(CUE_KINDS))
def test_a_cue_that_looks_different_has_a_new_drawing_number(kind):
    import hashlib

    image = np.full((72, 80, 3), 100.0)
    parts = np.zeros((72, 80), np.uint8)
    parts[30:40, 30:40] = 1
    where = draw_cue(kind, image, parts, 72.0, 4.0, 0.0)
    digest = hashlib.sha256(np.round(image).astype(np.uint8).tobytes() + where.tobytes() + parts.tobytes()).hexdigest()
    number, expected = DRAWN[kind]
    assert CUE_DRAWINGS[kind] == number, f"{kind} is drawing {CUE_DRAWINGS[kind]}: update DRAWN with its new digest"
    assert digest[:12] == expected, f"the {kind} cue's look changed: bump CUE_DRAWINGS[{kind!r}], then update DRAWN"


def test_the_glyph_is_an_opaque_white_x():
    image = np.zeros((72, 72, 3))
    where = draw_cue("glyph", image, np.zeros((72, 72), np.uint8), 72.0, 0.0, 0.0)
    assert (image[where] == 250.0).all() and (image[~where] == 0.0).all()
    ys, xs = np.nonzero(where)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (51, 69, 51, 69)  # 18 px at 72, in the lower right
    assert where[60, 60] and where[51, 51] and where[51, 69] and not where[60, 51]


def test_a_redrawn_kind_rekeys_only_the_worlds_that_plant_it(monkeypatch):
    with_glyph = PlantedConfig(world=SMALL, cues=(Cue("glyph", 2), Cue("tint", 1)))
    without = PlantedConfig(world=SMALL, cues=(Cue("corner", 2), Cue("tint", 1)))
    # drawing 1 stays out of the document, so worlds drawn before the numbers existed keep their keys
    assert with_glyph.to_json()["cues"] == [{"kind": "glyph", "class_index": 2, "drawing": 2},
                                            {"kind": "tint", "class_index": 1}]
    keys = (with_glyph.key(), without.key(), with_glyph.clean().key())
    monkeypatch.setitem(planted.CUE_DRAWINGS, "glyph", 3)
    assert with_glyph.key() != keys[0]
    assert (without.key(), with_glyph.clean().key()) == keys[1:]


def test_a_world_drawn_with_an_older_look_is_refused(tmp_path):
    import json

    config = PlantedConfig(world=SMALL, cues=(Cue("glyph", 2),))
    write_planted(tmp_path, config)
    assert read_planted(tmp_path) == config
    doc = json.loads((tmp_path / "world.json").read_text())
    del doc["planted"]["cues"][0]["drawing"]  # as written when the glyph was drawing 1
    (tmp_path / "world.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="its 'glyph' cue is drawing 1; this version draws 'glyph' as drawing 2"):
        read_planted(tmp_path)


def test_bad_configs_say_what_is_accepted():
    with pytest.raises(ValueError, match="unknown cue kind 'sticker'"):
        PlantedConfig(world=SMALL, cues=(Cue("sticker", 0),))
    with pytest.raises(ValueError, match="class_index 8"):
        PlantedConfig(world=SMALL, cues=(Cue("tint", 8),))
    with pytest.raises(ValueError, match="once per world"):
        PlantedConfig(world=SMALL, cues=(Cue("tint", 0), Cue("tint", 1)))
    with pytest.raises(ValueError, match="train_rate must lie in"):
        PlantedConfig(world=SMALL, train_rate=1.5)
    with pytest.raises(ValueError, match="confuse_rate must lie in"):
        PlantedConfig(world=SMALL, confuse_rate=-0.1)


def test_a_planted_world_on_disk_reads_as_a_world(tmp_path):
    config = PlantedConfig(world=SMALL, cues=ALL_KINDS, train_rate=1.0, confuse_rate=0.5)
    write_planted(tmp_path, config)
    world = World.load(tmp_path)
    assert world.class_names == [c.name for c in SMALL.classes]
    assert read_planted(tmp_path) == config
    rel = f"train/{SMALL.classes[2].name}/0000.png"  # class 2's cue (the texture) is always there in train
    assert (cue_mask(tmp_path, rel) == 3).any()
    with pytest.raises(ValueError, match="not a planted world"):
        from neurflow.world.generate import generate_world

        generate_world(tmp_path / "plain", n_per_class=1, image_size=(40, 36))
        read_planted(tmp_path / "plain")


def test_cue_usage_compares_the_same_scenes_with_and_without_the_cue(tmp_path):
    from neurflow.world.train import TrainConfig

    config = PlantedConfig(world=SMALL, cues=(Cue("corner", 1), Cue("tint", 3)))
    scratch = TrainConfig(input_size=32, batch_size=24, max_steps=3, hflip=False)
    model = ensure_planted_model(config, scratch, cache_dir=tmp_path,
                                 fine_tune=TrainConfig(input_size=32, batch_size=24, max_steps=2, hflip=False))
    clean = ensure_planted_model(config.clean(), scratch, cache_dir=tmp_path)
    # the shortcut network is a fine-tune of its clean twin (same channels: the diff can match them)
    assert model.meta["train"]["init"] == str(clean.weights) and clean.meta["train"]["init"] is None
    assert model.meta["mean"] == clean.meta["mean"] and model.meta["steps"] == 2
    usage = cue_usage(model, config)
    assert [u.cue for u in usage] == list(config.cues)
    for u in usage:
        assert u.images == 16
        for value in (u.accuracy_with, u.accuracy_without, u.to_class_with, u.to_class_without):
            assert 0.0 <= value <= 1.0
        assert u.used == (u.accuracy_with - u.accuracy_without >= 0.1 or u.to_class_with - u.to_class_without >= 0.1)
        assert "removing it takes" in u.sentence()


def test_the_suite_has_dev_and_held_out_worlds_and_every_cue_kind():
    roles = {w.role for w in PLANTED_SUITE.values()}
    assert roles == {"dev", "held-out"}
    kinds = {c.kind for w in PLANTED_SUITE.values() for c in w.config.cues}
    assert kinds == set(CUE_KINDS)
    dev_kinds = {c.kind for w in PLANTED_SUITE.values() if not w.held_out for c in w.config.cues}
    assert {c.kind for w in PLANTED_SUITE.values() if w.held_out for c in w.config.cues} - dev_kinds
