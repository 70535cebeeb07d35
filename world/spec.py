"""What a world is: its variant (part set, classes, background), and the knobs that make one world
differ from another (seed, image size, images per split, part sizes, distractor probability).

The classes are the vertices of a cube and the parts its twelve edges. So every class holds three
parts, every part belongs to exactly two classes, and two classes share at most one part: no single
part identifies a class, any two parts of an image do. A network that classifies well therefore has
to detect several parts, which is what NeurFlow should then find in its circuit.

The distractor part belongs to no class; it appears in a fraction of all images so that a good
network learns to ignore it.

Variants (``WorldConfig.variant``) change what matters for labeling while keeping the same layout on
disk, so every tool reads them alike (see :data:`VARIANTS`):

* ``standard``: the thirteen parts of :data:`neurflow.world.parts.PARTS`, cube classes;
* ``shapes2``: a second part set, other outlines, colours and coloured textures, cube classes;
* ``objects``: object-like composite parts (a house, a car, a clock...), cube classes;
* ``cluttered``: the standard parts and classes on backgrounds full of small coloured clutter;
* ``uneven``: the standard parts in classes of two to four parts that share them unevenly (the red
  circle is in five classes, the white crescent in two, the blue square's classes share nothing else);
* ``shapes2-cluttered``: the second part set and its classes on the cluttered background;
* ``shapes3``: a third part set (other outlines, colours and textures), cube classes, added as a
  held-out world after the labeling method was last changed;
* ``shapes3-cluttered``: the third part set and its classes on the cluttered background, added as a
  held-out world for the evidence combination of issue 18;
* ``shapes3-uneven``: the third part set in the uneven classes of ``uneven`` (each standard part
  replaced by the shapes3 part at its place), added as a held-out world after the last change of the
  calibrated combination (issue 18);
* ``shapes3-uneven-cluttered``: those uneven classes on the cluttered background, added as a
  held-out world after the second freeze of the labeling method (issue 18).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from neurflow.world.parts import PART_SETS, Part, part_by_name

#: Bump when the drawing of images changes, so that cached worlds and models are rebuilt.
WORLD_VERSION = 1
SCHEMA_VERSION = "neurflow.world/1"

# Cube construction: class v (3 bits b0 b1 b2) holds one part of each of the three groups below;
# group d's part is chosen by the two bits of v other than bit d, so the two classes that differ
# only in bit d share it.
_GROUPS: tuple[tuple[str, ...], ...] = (
    ("red circle", "blue square", "green triangle", "yellow star"),
    ("orange ring", "purple diamond", "cyan cross", "pink heart"),
    ("striped patch", "checkered patch", "dotted patch", "white crescent"),
)


@dataclass(frozen=True)
class ClassDef:
    index: int
    name: str
    parts: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "parts": list(self.parts),
                "part_ids": [part_by_name(p).id for p in self.parts]}


def _class(index: int, parts: tuple[str, ...]) -> ClassDef:
    return ClassDef(index, f"class_{index}_" + "_".join(part_by_name(p).slug for p in parts), parts)


def _cube_classes(groups: tuple[tuple[str, ...], ...] = _GROUPS) -> tuple[ClassDef, ...]:
    classes = []
    for v in range(8):
        b = [(v >> k) & 1 for k in range(3)]
        parts = (
            groups[0][b[1] + 2 * b[2]],
            groups[1][b[0] + 2 * b[2]],
            groups[2][b[0] + 2 * b[1]],
        )
        classes.append(_class(v, parts))
    return tuple(classes)


#: The eight classes, e.g. ``class_0_redcircle_orangering_stripedpatch``. Names start with the
#: class index, so sorted folder order is class order.
CLASSES: tuple[ClassDef, ...] = _cube_classes()

# Uneven sharing: no class's parts are a subset of another's, so every class stays identifiable,
# but one part is in five classes and the others in one to three.
_UNEVEN: tuple[tuple[str, ...], ...] = (
    ("red circle", "blue square"),
    ("red circle", "green triangle", "striped patch"),
    ("red circle", "yellow star", "checkered patch"),
    ("red circle", "orange ring", "purple diamond", "dotted patch"),
    ("red circle", "cyan cross", "pink heart"),
    ("blue square", "green triangle", "white crescent"),
    ("yellow star", "orange ring", "white crescent", "striped patch"),
    ("cyan cross", "purple diamond", "checkered patch"),
)


@dataclass(frozen=True)
class Variant:
    """What a world variant draws: its part set (distractor last), its classes, its background."""

    name: str
    parts: tuple[Part, ...]
    classes: tuple[ClassDef, ...]
    clutter: bool = False  # small coloured shapes and strokes all over the background (mask: background)

    @property
    def distractor(self) -> str:
        return self.parts[-1].name


def _renamed(classes: tuple[tuple[str, ...], ...], part_set: str) -> tuple[tuple[str, ...], ...]:
    """``classes`` (of standard parts) with each part replaced by the part of ``part_set`` at its place."""
    place = {p.name: k for k, p in enumerate(PART_SETS["standard"])}
    return tuple(tuple(PART_SETS[part_set][place[name]].name for name in parts) for parts in classes)


def _set_groups(parts: tuple[Part, ...]) -> tuple[tuple[str, ...], ...]:
    names = [p.name for p in parts[:12]]
    return tuple(tuple(names[4 * g: 4 * g + 4]) for g in range(3))


#: Every world variant by name (see the module docstring).
VARIANTS: dict[str, Variant] = {
    "standard": Variant("standard", PART_SETS["standard"], CLASSES),
    "shapes2": Variant("shapes2", PART_SETS["shapes2"], _cube_classes(_set_groups(PART_SETS["shapes2"]))),
    "objects": Variant("objects", PART_SETS["objects"], _cube_classes(_set_groups(PART_SETS["objects"]))),
    "cluttered": Variant("cluttered", PART_SETS["standard"], CLASSES, clutter=True),
    "uneven": Variant("uneven", PART_SETS["standard"], tuple(_class(i, p) for i, p in enumerate(_UNEVEN))),
    "shapes2-cluttered": Variant("shapes2-cluttered", PART_SETS["shapes2"],
                                 _cube_classes(_set_groups(PART_SETS["shapes2"])), clutter=True),
    "shapes3": Variant("shapes3", PART_SETS["shapes3"], _cube_classes(_set_groups(PART_SETS["shapes3"]))),
    "shapes3-cluttered": Variant("shapes3-cluttered", PART_SETS["shapes3"],
                                 _cube_classes(_set_groups(PART_SETS["shapes3"])), clutter=True),
    "shapes3-uneven": Variant("shapes3-uneven", PART_SETS["shapes3"],
                              tuple(_class(i, p) for i, p in enumerate(_renamed(_UNEVEN, "shapes3")))),
    "shapes3-uneven-cluttered": Variant("shapes3-uneven-cluttered", PART_SETS["shapes3"],
                                        tuple(_class(i, p) for i, p in enumerate(_renamed(_UNEVEN, "shapes3"))),
                                        clutter=True),
}


def _default_splits() -> dict[str, int]:
    return {"train": 300, "heldout": 100}


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a world's images, bit for bit.

    ``image_size`` is (width, height). The default 80x72 is deliberately not square: the engine
    resizes the shorter side to the model input (72 -> 64) and centre-crops, so every box mapping
    is exercised. Parts are placed fully inside the centre square (x in [4, 76) at 80x72) that the
    crop keeps; the side margins hold background only, so the model never sees a cut part.
    """

    seed: int = 0
    image_size: tuple[int, int] = (80, 72)
    splits: dict[str, int] = field(default_factory=_default_splits)  # split -> images per class
    # Placement-disc diameters as fractions of the centre square's side (20-28 px at 72 px), so a
    # small test world looks like a scaled-down default world.
    part_size: tuple[float, float] = (0.28, 0.39)
    distractor_prob: float = 0.25
    distractor_size: tuple[float, float] = (0.2, 0.28)
    noise: float = 8.0  # std of the per-pixel Gaussian noise, 8-bit levels
    variant: str = "standard"  # a key of VARIANTS

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown world variant {self.variant!r}; choose from {list(VARIANTS)}")
        w, h = self.image_size
        if min(w, h) < 24:
            raise ValueError(f"image_size {self.image_size} is too small; each side must be >= 24 px")
        if not self.splits or any(n < 0 for n in self.splits.values()):
            raise ValueError(f"splits must map split names to non-negative counts, got {self.splits}")
        for name in self.splits:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"invalid split name {name!r}")

    @property
    def variant_def(self) -> Variant:
        return VARIANTS[self.variant]

    @property
    def classes(self) -> tuple[ClassDef, ...]:
        return self.variant_def.classes

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.variant == "standard":
            # Absent for the standard world, so its world.json and cache key are those of the
            # worlds generated before variants existed (their caches stay valid).
            del out["variant"]
        out["image_size"] = list(self.image_size)
        out["part_size"] = list(self.part_size)
        out["distractor_size"] = list(self.distractor_size)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorldConfig:
        return cls(
            seed=int(data["seed"]),
            image_size=tuple(data["image_size"]),
            splits=dict(data["splits"]),
            part_size=tuple(data["part_size"]),
            distractor_prob=float(data["distractor_prob"]),
            distractor_size=tuple(data["distractor_size"]),
            noise=float(data["noise"]),
            variant=str(data.get("variant", "standard")),
        )

    def key(self) -> str:
        """A short stable hash of the config and the world version (the cache key)."""
        payload = json.dumps({"version": WORLD_VERSION, **self.to_json()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def world_document(config: WorldConfig) -> dict[str, Any]:
    """The content of ``world.json``."""
    variant = config.variant_def
    return {
        "schema": SCHEMA_VERSION,
        "world_version": WORLD_VERSION,
        "seed": config.seed,
        "image_size": list(config.image_size),
        "background": 0,
        "parts": [{"id": p.id, "name": p.name, "kind": p.kind} for p in variant.parts],
        "distractor": variant.distractor,
        "classes": [c.to_json() for c in config.classes],
        "splits": {name: {"per_class": n, "images": n * len(config.classes)} for name, n in config.splits.items()},
        "config": config.to_json(),
    }
