"""The world's images and masks: deterministic, consistent with what was drawn, right geometry."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurflow.core.images import Geometry, Preprocess
from neurflow.world.generate import generate_world
from neurflow.world.ground_truth import World
from neurflow.world.parts import DISTRACTOR, PARTS, part_by_name
from neurflow.world.scene import centre_square, render_scene
from neurflow.world.spec import CLASSES, WorldConfig

from tests.world.conftest import TINY_PER_CLASS, TINY_SEED


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- determinism ------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(tiny_world, tmp_path):
    root, _ = tiny_world
    again = tmp_path / "again"
    generate_world(again, n_per_class=TINY_PER_CLASS, seed=TINY_SEED)
    first, second = _files(root), _files(again)
    assert len(first) == 2 * 2 * 8 * TINY_PER_CLASS + 1  # images + masks of two splits, world.json
    assert first == second


def test_other_seed_gives_other_images(tiny_world, tmp_path):
    root, _ = tiny_world
    other = tmp_path / "other"
    generate_world(other, n_per_class=1, seed=TINY_SEED + 1, splits=("train",))
    name = f"images/train/{CLASSES[0].name}/0000.png"
    assert (other / name).read_bytes() != (root / name).read_bytes()


def test_image_does_not_depend_on_world_size(tiny_world, tmp_path):
    """Image n is seeded by (seed, split, class, n), so a smaller world is a prefix of a larger one."""
    root, _ = tiny_world
    small = tmp_path / "small"
    generate_world(small, n_per_class=1, seed=TINY_SEED, splits=("heldout",))
    for cls in CLASSES:
        name = f"images/heldout/{cls.name}/0000.png"
        assert (small / name).read_bytes() == (root / name).read_bytes()


def test_refuses_to_overwrite(tiny_world):
    root, _ = tiny_world
    with pytest.raises(ValueError, match="already holds a world"):
        generate_world(root, n_per_class=1, seed=TINY_SEED)


# -- class definitions -------------------------------------------------------------------------------
def test_vocabulary_is_distinct():
    names = [p.name for p in PARTS]
    assert len(set(names)) == len(names) == 13
    assert [p.id for p in PARTS] == list(range(1, 14))
    assert len({p.color for p in PARTS if p.kind == "shape"}) == sum(p.kind == "shape" for p in PARTS)
    assert {p.name for p in PARTS if p.kind == "texture"} == {"striped patch", "checkered patch", "dotted patch"}


def test_classes_share_parts_but_no_part_decides_a_class():
    assert [c.index for c in CLASSES] == list(range(8))
    assert all(len(c.parts) == 3 and len(set(c.parts)) == 3 for c in CLASSES)
    uses = Counter(p for c in CLASSES for p in c.parts)
    assert DISTRACTOR not in uses
    assert set(uses) == {p.name for p in PARTS} - {DISTRACTOR}
    assert set(uses.values()) == {2}  # every part is in exactly two classes
    for a, b in combinations(CLASSES, 2):
        assert len(set(a.parts) & set(b.parts)) <= 1  # so any two parts of an image name its class


def test_class_names_sort_in_index_order_and_name_their_parts():
    names = [c.name for c in CLASSES]
    assert sorted(names) == names and len(set(names)) == 8
    assert names[0] == "class_0_redcircle_orangering_stripedpatch"
    for c in CLASSES:
        assert c.name == f"class_{c.index}_" + "_".join(part_by_name(p).slug for p in c.parts)


def test_world_json_describes_the_world(tiny_world):
    root, config = tiny_world
    doc = json.loads((root / "world.json").read_text())
    assert doc["schema"] == "neurflow.world/1"
    assert doc["seed"] == TINY_SEED and doc["image_size"] == [80, 72]
    assert doc["parts"][0] == {"id": 1, "name": "red circle", "kind": "shape"}
    assert [c["name"] for c in doc["classes"]] == [c.name for c in CLASSES]
    assert doc["classes"][3]["parts"] == list(CLASSES[3].parts)
    assert doc["splits"] == {"train": {"per_class": 3, "images": 24}, "heldout": {"per_class": 3, "images": 24}}
    assert WorldConfig.from_json(doc["config"]) == config
    # only images under images/, one folder per class
    files = [p for p in (root / "images").rglob("*") if p.is_file()]
    assert len(files) == 48 and all(p.suffix == ".png" for p in files)
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == [c.name for c in CLASSES]


# -- masks against drawing ---------------------------------------------------------------------------
def test_saved_files_are_the_rendered_scene(tiny_world):
    root, config = tiny_world
    world = World.load(root)
    for cls in CLASSES:
        scene = render_scene(config, cls, "train", 1)
        rel = f"train/{cls.name}/0001.png"
        assert np.array_equal(np.asarray(Image.open(root / "images" / rel)), scene.rgb)
        assert np.array_equal(world.mask(rel), scene.mask)


def test_every_image_holds_its_class_parts(tiny_world):
    root, _ = tiny_world
    world = World.load(root)
    distractors = 0
    for split in ("train", "heldout"):
        for rel in world.images(split):
            cls = CLASSES[int(rel.split("/")[1].split("_")[1])]
            present = {world.part_names[i] for i in np.unique(world.mask(rel)) if i}
            assert set(cls.parts) <= present <= set(cls.parts) | {DISTRACTOR}, rel
            distractors += DISTRACTOR in present
    assert 0 < distractors < 48  # the distractor is occasional


def test_dominant_part_of_a_placed_part_is_that_part(tiny_world):
    root, config = tiny_world
    world = World.load(root)
    checked = 0
    for cls in CLASSES:
        for n in range(TINY_PER_CLASS):
            scene = render_scene(config, cls, "heldout", n)
            rel = f"heldout/{cls.name}/{n:04d}.png"
            for placement in scene.placements:
                assert world.dominant_part(rel, placement.box) == placement.part
                assert world.part_fractions(rel, placement.box)[placement.part] > 0.25  # star: ~0.3
                checked += 1
    assert checked >= 8 * TINY_PER_CLASS * 3


def test_mask_pixels_have_the_part_colour(tiny_world):
    """The mask is aligned with the pixels: plain parts' mask pixels average to the drawn colour."""
    root, config = tiny_world
    for cls in CLASSES:
        scene = render_scene(config, cls, "train", 0)
        for placement in scene.placements:
            part = part_by_name(placement.part)
            if part.kind != "shape":
                continue
            pixels = scene.rgb[scene.mask == part.id].astype(float)
            assert len(pixels) > 50
            assert np.abs(pixels.mean(0) - np.asarray(placement.color)).max() < 12, placement.part


def test_background_has_no_part_ids_and_parts_no_background(tiny_world):
    root, config = tiny_world
    scene = render_scene(config, CLASSES[2], "train", 2)
    assert scene.mask.dtype == np.uint8
    # every placement's centre is its part (all shapes of the vocabulary cover their centre except
    # the ring and the crescent, whose centre is background by design)
    for p in scene.placements:
        inside = scene.mask[int(p.cy), int(p.cx)]
        expected = 0 if p.part in ("orange ring", "white crescent") else part_by_name(p.part).id
        assert inside == expected, p.part


# -- geometry ----------------------------------------------------------------------------------------
def test_non_square_images_keep_parts_inside_the_centre_crop(tiny_world):
    root, _ = tiny_world
    world = World.load(root)
    ox, oy, side = centre_square(80, 72)
    assert (ox, oy, side) == (4.0, 0.0, 72.0)
    for rel in world.images("train"):
        with Image.open(root / "images" / rel) as im:
            assert im.size == (80, 72) and im.mode == "RGB"
        mask = world.mask(rel)
        assert mask.shape == (72, 80)
        assert not mask[:, :4].any() and not mask[:, 76:].any()  # margins the engine crops away


def test_engine_boxes_map_onto_the_right_part(tiny_world):
    """A box around a part in model-input pixels, mapped back by the engine's Geometry, lands on the
    part; and the engine's preprocessed pixel at the part centre has the part's colour."""
    root, config = tiny_world
    world = World.load(root)
    geometry = Geometry(80, 72, 64)
    preprocess = Preprocess(64, (0, 0, 0), (1, 1, 1))
    for cls in CLASSES:
        rel = f"train/{cls.name}/0002.png"
        scene = render_scene(config, cls, "train", 2)
        pixels = preprocess.pixels(Image.open(root / "images" / rel).convert("RGB"))
        for p in scene.placements:
            ox, oy = geometry.offset
            ix, iy, ir = (p.cx - ox) / geometry.scale, (p.cy - oy) / geometry.scale, p.size / 2 / geometry.scale
            box = geometry.to_source((ix - ir, iy - ir, ix + ir, iy + ir))
            assert world.dominant_part(rel, box) == p.part
            if p.part in ("red circle", "blue square", "purple diamond", "yellow star", "cyan cross"):
                centre = pixels[:, int(iy), int(ix)].numpy() * 255
                assert np.abs(centre - np.asarray(p.color)).max() < 40, p.part


def test_square_and_small_worlds(tmp_path):
    config = generate_world(tmp_path / "sq", n_per_class=1, seed=1, image_size=32, splits=("train",))
    world = World.load(tmp_path / "sq")
    assert config.image_size == (32, 32)
    for rel in world.images("train"):
        cls = CLASSES[int(rel.split("/")[1].split("_")[1])]
        assert world.mask(rel).shape == (32, 32)
        present = {world.part_names[i] for i in np.unique(world.mask(rel)) if i}
        assert set(cls.parts) <= present


def test_rejects_unusable_configs(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        generate_world(tmp_path / "a", image_size=(16, 64))
    with pytest.raises(ValueError, match="split"):
        generate_world(tmp_path / "b", n_per_class={"../x": 1})
