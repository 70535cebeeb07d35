"""World variants: each generates, loads, and has masks that match what was drawn; the standard
world is unchanged (same cache key, same world.json, no variant field)."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from neurflow.world.generate import generate_world
from neurflow.world.ground_truth import World
from neurflow.world.parts import PART_SETS, PARTS, part_by_name
from neurflow.world.scene import render_scene
from neurflow.world.spec import VARIANTS, WorldConfig

PER_CLASS = 2


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant_world(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"variant-{request.param}")
    config = generate_world(root, n_per_class=PER_CLASS, seed=3, splits=("train",), variant=request.param, distractor_prob=0.5)
    return request.param, root, config


def test_standard_world_is_unchanged():
    """The standard world's cache key and world.json predate variants: cached worlds and models stay valid."""
    config = WorldConfig()
    assert config.key() == "af2fcc1abd93"
    assert "variant" not in config.to_json()
    assert WorldConfig.from_json(config.to_json()) == config
    assert WorldConfig(variant="standard") == config


def test_variants_have_distinct_keys_and_round_trip():
    keys = {name: WorldConfig(variant=name).key() for name in VARIANTS}
    assert len(set(keys.values())) == len(VARIANTS)
    for name in VARIANTS:
        config = WorldConfig(variant=name, splits={"train": 3})
        assert WorldConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown world variant 'nope'; choose from .*shapes2"):
        WorldConfig(variant="nope")


def test_world_loads_with_its_variant(variant_world):
    name, root, config = variant_world
    world = World.load(root)
    variant = VARIANTS[name]
    assert world.config.variant == name
    assert world.class_names == [c.name for c in variant.classes]
    assert sorted(world.part_names.values()) == sorted(p.name for p in variant.parts)
    doc = json.loads((root / "world.json").read_text())
    assert doc["distractor"] == variant.distractor
    assert len(world.images("train")) == PER_CLASS * len(variant.classes)


def test_masks_hold_exactly_the_class_parts(variant_world):
    """Every part of the image's class is in its mask (at least 40 px), no part of another class is,
    the distractor only sometimes; and each part's mask pixels lie in the box it was placed in."""
    name, root, config = variant_world
    world = World.load(root)
    variant = VARIANTS[name]
    distractors = 0
    for cls in variant.classes:
        for n in range(PER_CLASS):
            scene = render_scene(config, cls, "train", n)
            mask = np.asarray(Image.open(root / "masks" / "train" / cls.name / f"{n:04d}.png"))
            assert (mask == scene.mask).all()
            present = Counter(world.part_names[int(v)] for v in mask.reshape(-1) if v)
            assert set(cls.parts) <= set(present), (cls.name, present)
            assert set(present) - set(cls.parts) <= {variant.distractor}
            assert min(present[p] for p in cls.parts) >= 40
            distractors += variant.distractor in present
            for placement in scene.placements:
                ys, xs = np.nonzero(mask == part_by_name(placement.part).id)
                x0, y0, x1, y1 = placement.box
                assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
    assert 0 < distractors < len(variant.classes) * PER_CLASS


def test_second_part_set_shares_nothing_with_the_standard_one():
    standard = PART_SETS["standard"]
    shapes2 = PART_SETS["shapes2"]
    assert not {p.name for p in standard} & {p.name for p in shapes2}
    assert not {p.color for p in standard} & {p.color for p in shapes2}
    assert {p.kind for p in shapes2} == {"shape", "texture"}
    textures = [p for p in shapes2 if p.kind == "texture"]
    assert all(max(p.color) > 100 for p in textures)  # coloured textures, not black on white


def test_objects_are_made_of_several_colours():
    """A composite part shows at least two well-separated colours inside its own mask: at least 3 %
    of its interior pixels (edges, where the part blends into the background, left out) are far
    (> 60 levels) from its median colour. A plain shape of the standard world has none such."""
    config = WorldConfig(variant="objects", distractor_prob=1.0)
    for cls in config.classes:
        for n in range(PER_CLASS):
            scene = render_scene(config, cls, "train", n)
            for placement in scene.placements:
                pid = part_by_name(placement.part).id
                pixels = scene.rgb[_interior(scene.mask == pid)].astype(np.float64)
                far = np.linalg.norm(pixels - np.median(pixels, axis=0), axis=1) > 60
                assert far.mean() > 0.03, (cls.name, n, placement.part)


def _interior(inside: np.ndarray) -> np.ndarray:
    core = inside.copy()
    core[1:] &= inside[:-1]
    core[:-1] &= inside[1:]
    core[:, 1:] &= inside[:, :-1]
    core[:, :-1] &= inside[:, 1:]
    return core


def test_plain_shapes_are_one_colour():
    """The check above on the standard world's plain shapes: their interiors are one colour plus noise."""
    config = WorldConfig()
    for cls in config.classes:
        scene = render_scene(config, cls, "train", 0)
        for placement in scene.placements:
            part = part_by_name(placement.part)
            if part.kind == "shape":
                pixels = scene.rgb[_interior(scene.mask == part.id)].astype(np.float64)
                assert (np.linalg.norm(pixels - np.median(pixels, axis=0), axis=1) > 60).mean() < 0.01, part.name


def test_cluttered_background_is_busy_but_stays_background():
    """Clutter changes background pixels (not the mask); its colours vary far more than a plain background's."""
    plain, busy = WorldConfig(), WorldConfig(variant="cluttered")
    spread = {}
    for config in (plain, busy):
        values = []
        for cls in config.classes[:4]:
            scene = render_scene(config, cls, "train", 0)
            values.append(scene.rgb[scene.mask == 0].astype(np.float64).std(axis=0).mean())
        spread[config.variant] = float(np.mean(values))
    assert spread["cluttered"] > 2 * spread["standard"], spread
    # Same classes, same parts in each image's mask as for the standard world's rules.
    scene = render_scene(busy, busy.classes[0], "train", 0)
    names = {PARTS[int(v) - 1].name for v in np.unique(scene.mask) if v}
    assert set(busy.classes[0].parts) <= names


def test_uneven_classes_share_parts_unevenly():
    classes = VARIANTS["uneven"].classes
    counts = Counter(p for c in classes for p in c.parts)
    assert counts["red circle"] == 5
    assert min(counts.values()) <= 2 and sorted({len(c.parts) for c in classes}) == [2, 3, 4]
    for a, b in combinations(classes, 2):  # every class stays identifiable from its parts
        assert not set(a.parts) <= set(b.parts) and not set(b.parts) <= set(a.parts)
