"""The synthetic concept world: procedural images whose parts are known pixel by pixel.

Eight classes, each a combination of three of twelve parts (shapes, colours, textures), drawn at
random places and scales on noisy backgrounds, with a per-pixel part mask for every image. It is
the demo's data, the tests' data, and a check that NeurFlow finds the concepts planted in it.

Modules, one job each:

* :mod:`core.world.parts`        the part vocabulary and how one part is drawn
* :mod:`core.world.spec`         the classes and the world config (what makes a world)
* :mod:`core.world.scene`        one image and its mask
* :mod:`core.world.generate`     a world on disk (``generate_world``)
* :mod:`core.world.ground_truth` ``World``: parts in a box, purity of a circuit's groups
* :mod:`core.world.cache`        the cache of worlds and models (``ensure_world``)
* :mod:`core.world.train`        the reference resnet18 (``ensure_world_model``)
* :mod:`neurflow.world.setups`   a world with its network and CLIP, built side by side (``DEMO``)
* :mod:`core.world.cli`          ``neurflow world generate|train``

The training names are imported lazily so that using the data does not import torchvision.
"""

from __future__ import annotations

from typing import Any

from neurflow.world.cache import cache_root, ensure_world
from neurflow.world.generate import generate_world, write_world
from neurflow.world.ground_truth import MIN_PART_FRACTION, World, purity, score_circuit
from neurflow.world.parts import DISTRACTOR, PARTS, Part, part_by_name
from neurflow.world.spec import CLASSES, ClassDef, WorldConfig

_LAZY = {"TrainConfig", "WorldModel", "ensure_world_model", "train_world_model"}

__all__ = [
    "CLASSES", "DISTRACTOR", "MIN_PART_FRACTION", "PARTS", "ClassDef", "Part", "World", "WorldConfig",
    "cache_root", "ensure_world", "generate_world", "part_by_name", "purity", "score_circuit", "write_world",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from neurflow.world import train

        return getattr(train, name)
    raise AttributeError(f"module 'neurflow.world' has no attribute {name!r}")
