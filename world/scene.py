"""One image of the world: a noisy background with the parts of its class placed on it.

Every image has its own random generator seeded from (world seed, split, class, image number), so
an image does not depend on how many other images were generated or in which order: the first
100 images of a 300-image world are the images of a 100-image world with the same seed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from neurflow.world.parts import Placement, draw_part, part_by_name
from neurflow.world.spec import ClassDef, WorldConfig

#: The side, in pixels, of the centre square at which the texture periods of parts.py are tuned.
REFERENCE_SIDE = 72.0
_MAX_TRIES = 200


@dataclass(frozen=True)
class Scene:
    """A rendered image, its part-id mask and the placements that produced them."""

    rgb: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, part id per pixel, 0 = background
    placements: tuple[Placement, ...]
    # more ground-truth masks, written under ``root/<name>/`` beside ``masks/`` (planted cues: "cues")
    extra_masks: dict[str, np.ndarray] = field(default_factory=dict)


def image_rng(config: WorldConfig, split: str, class_index: int, number: int) -> np.random.Generator:
    """The generator of one image; crc32 keeps split names stable across Python processes."""
    return np.random.default_rng([config.seed, zlib.crc32(split.encode()), class_index, number])


def centre_square(width: int, height: int) -> tuple[float, float, float]:
    """(x offset, y offset, side) of the centre square that a shorter-side resize + crop keeps."""
    side = min(width, height)
    return (width - side) / 2.0, (height - side) / 2.0, float(side)


def _jitter_colour(rng: np.random.Generator, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    out = np.asarray(colour, dtype=np.float64) * rng.uniform(0.9, 1.1, 3) + rng.uniform(-12, 12, 3)
    return tuple(int(c) for c in np.clip(np.round(out), 0, 255))


def _place(rng: np.random.Generator, config: WorldConfig, parts: list[str]) -> list[Placement]:
    """Non-overlapping placements fully inside the centre square; shrinks the parts if crowded."""
    ox, oy, side = centre_square(*config.image_size)
    scale = side / REFERENCE_SIDE
    distractor = config.variant_def.distractor
    shrink = 1.0
    while True:
        placed: list[Placement] = []
        for name in parts:
            lo, hi = config.distractor_size if name == distractor else config.part_size
            size = rng.uniform(lo, hi) * side * shrink
            r = size / 2
            for _ in range(_MAX_TRIES):
                cx = rng.uniform(ox + r + 1, ox + side - r - 1)
                cy = rng.uniform(oy + r + 1, oy + side - r - 1)
                if all(math.hypot(cx - p.cx, cy - p.cy) >= r + p.size / 2 + 2 for p in placed):
                    break
            else:
                break  # no room: start again with smaller parts
            part = part_by_name(name)
            placed.append(Placement(
                part=name, cx=cx, cy=cy, size=size,
                angle=float(rng.uniform(-part.max_rotation, part.max_rotation)),
                color=_jitter_colour(rng, part.color),
                phase=(float(rng.uniform(0, 10)), float(rng.uniform(0, 10))),
                texture_scale=scale,
            ))
        if len(placed) == len(parts):
            return placed
        shrink *= 0.9


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A dull, tinted grey with a soft gradient: never the colour of a part."""
    base = rng.uniform(70, 150) + rng.uniform(-15, 15, 3)
    angle = rng.uniform(0, 2 * math.pi)
    amplitude = rng.uniform(0, 20)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = ((xs / max(width - 1, 1) - 0.5) * math.cos(angle) + (ys / max(height - 1, 1) - 0.5) * math.sin(angle)) * 2
    return base[None, None, :] + (amplitude * ramp)[..., None]


def _clutter(rng: np.random.Generator, image: np.ndarray, side: float) -> None:
    """Small opaque blobs, bars and strokes of random colours all over the image (background in the
    mask): at most a third of the smallest part's size, so no clutter item reads as a part, yet the
    colours of the parts turn up everywhere."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    unit = side / REFERENCE_SIDE
    for _ in range(int(rng.integers(25, 45))):
        colour = rng.uniform(0, 255, 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        length = rng.uniform(3, 8) * unit
        kind = rng.integers(3)
        if kind == 0:  # blob
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= (length / 2) ** 2
        else:  # bar (kind 1) or thin stroke (kind 2), at a random angle
            angle = rng.uniform(0, math.pi)
            along = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
            across = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
            thickness = (length / 3 if kind == 1 else 0.8 * unit)
            inside = (np.abs(along) <= length / 2 * (1 + kind)) & (np.abs(across) <= thickness / 2)
        image[inside] = colour


def render_scene(config: WorldConfig, cls: ClassDef, split: str, number: int) -> Scene:
    """Draw image ``number`` of class ``cls`` in ``split``."""
    rng = image_rng(config, split, cls.index, number)
    width, height = config.image_size
    image = _background(rng, width, height)
    variant = config.variant_def
    if variant.clutter:
        _clutter(rng, image, centre_square(width, height)[2])
    mask = np.zeros((height, width), dtype=np.uint8)
    parts = [cls.parts[i] for i in rng.permutation(len(cls.parts))]
    if rng.random() < config.distractor_prob:
        parts.append(variant.distractor)
    placements = _place(rng, config, parts)
    for placement in placements:
        draw_part(image, mask, placement)
    image += rng.normal(0.0, config.noise, image.shape)
    rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Scene(rgb=rgb, mask=mask, placements=tuple(placements))
