"""What a world is: its classes (combinations of parts) and the knobs that make one world differ
from another (seed, image size, images per split, part sizes, distractor probability).

The classes are the vertices of a cube and the parts its twelve edges. So every class holds three
parts, every part belongs to exactly two classes, and two classes share at most one part: no single
part identifies a class, any two parts of an image do. A network that classifies well therefore has
to detect several parts, which is what NeurFlow should then find in its circuit.

The distractor part belongs to no class; it appears in a fraction of all images so that a good
network learns to ignore it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from neurflow.world.parts import DISTRACTOR, PARTS, part_by_name

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


def _cube_classes() -> tuple[ClassDef, ...]:
    classes = []
    for v in range(8):
        b = [(v >> k) & 1 for k in range(3)]
        parts = (
            _GROUPS[0][b[1] + 2 * b[2]],
            _GROUPS[1][b[0] + 2 * b[2]],
            _GROUPS[2][b[0] + 2 * b[1]],
        )
        name = f"class_{v}_" + "_".join(part_by_name(p).slug for p in parts)
        classes.append(ClassDef(v, name, parts))
    return tuple(classes)


#: The eight classes, e.g. ``class_0_redcircle_orangering_stripedpatch``. Names start with the
#: class index, so sorted folder order is class order.
CLASSES: tuple[ClassDef, ...] = _cube_classes()


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

    def __post_init__(self) -> None:
        w, h = self.image_size
        if min(w, h) < 24:
            raise ValueError(f"image_size {self.image_size} is too small; each side must be >= 24 px")
        if not self.splits or any(n < 0 for n in self.splits.values()):
            raise ValueError(f"splits must map split names to non-negative counts, got {self.splits}")
        for name in self.splits:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"invalid split name {name!r}")

    @property
    def classes(self) -> tuple[ClassDef, ...]:
        return CLASSES

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
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
        )

    def key(self) -> str:
        """A short stable hash of the config and the world version (the cache key)."""
        payload = json.dumps({"version": WORLD_VERSION, **self.to_json()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def world_document(config: WorldConfig) -> dict[str, Any]:
    """The content of ``world.json``."""
    return {
        "schema": SCHEMA_VERSION,
        "world_version": WORLD_VERSION,
        "seed": config.seed,
        "image_size": list(config.image_size),
        "background": 0,
        "parts": [{"id": p.id, "name": p.name, "kind": p.kind} for p in PARTS],
        "distractor": DISTRACTOR,
        "classes": [c.to_json() for c in config.classes],
        "splits": {name: {"per_class": n, "images": n * len(config.classes)} for name, n in config.splits.items()},
        "config": config.to_json(),
    }
