"""Write a world to disk.

Layout (``root`` is the world root)::

    root/world.json                                  parts, classes, splits, config
    root/images/<split>/<class_name>/<nnnn>.png      RGB images, the only files under images/
    root/masks/<split>/<class_name>/<nnnn>.png       8-bit part id per pixel, 0 = background

Only images live under ``images/`` because the engine collects every PNG/JPEG of the folder it is
given, recursively; pass ``root/images/train`` (or ``root/images``) to it. ``world.json`` is written
last, so a folder with a ``world.json`` is a complete world.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from neurflow.progress import Meter, ProgressBars
from neurflow.world.scene import Scene, render_scene
from neurflow.world.spec import ClassDef, WorldConfig, world_document

WORLD_FILE = "world.json"


def image_name(number: int) -> str:
    return f"{number:04d}.png"


def write_world(root: str | Path, config: WorldConfig, *, overwrite: bool = False, progress: bool = False,
                render: Callable[[ClassDef, str, int], Scene] | None = None,
                document: dict[str, Any] | None = None) -> Path:
    """Render every image of ``config`` under ``root``; return the path of ``world.json``.

    ``render(cls, split, number)`` draws one image (default: :func:`render_scene` of ``config``) and
    ``document`` is merged into ``world.json``: a world built on this one (:mod:`neurflow.world.planted`)
    keeps its layout, and every reader of worlds reads it."""
    root = Path(root)
    if (root / WORLD_FILE).exists() or (root / "images").exists():
        if not overwrite:
            raise ValueError(f"{root} already holds a world; choose an empty folder or pass overwrite=True")
        (root / WORLD_FILE).unlink(missing_ok=True)
    jobs = [(split, cls, n) for split, count in config.splits.items() for cls in config.classes for n in range(count)]
    bars = ProgressBars() if progress else None
    report = Meter(bars)
    for done, (split, cls, number) in enumerate(jobs):
        report("world images", done, len(jobs), "images")
        scene = render(cls, split, number) if render else render_scene(config, cls, split, number)
        relative = Path(split) / cls.name / image_name(number)
        for folder, array in (("images", scene.rgb), ("masks", scene.mask), *scene.extra_masks.items()):
            path = root / folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, format="PNG")
    report("world images", len(jobs), len(jobs), "images")
    if bars is not None:
        bars.close()
    text = json.dumps(world_document(config) | (document or {}), indent=1)
    path = root / WORLD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    return path


def generate_world(
    root: str | Path,
    n_per_class: int | Mapping[str, int] = 40,
    seed: int = 0,
    image_size: int | tuple[int, int] = (80, 72),
    *,
    splits: Iterable[str] = ("train", "heldout"),
    distractor_prob: float = 0.25,
    variant: str = "standard",
    overwrite: bool = False,
    progress: bool = False,
) -> WorldConfig:
    """Generate a world under ``root`` and return its config.

    ``n_per_class`` is the number of images per class in every split of ``splits``, or a mapping
    split -> number (then ``splits`` is ignored). ``image_size`` is (width, height) or one side.
    ``variant`` names one of :data:`neurflow.world.spec.VARIANTS`.
    """
    if isinstance(n_per_class, Mapping):
        counts = {str(k): int(v) for k, v in n_per_class.items()}
    else:
        counts = {str(name): int(n_per_class) for name in splits}
    size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    config = WorldConfig(seed=seed, image_size=size, splits=counts, distractor_prob=distractor_prob, variant=variant)
    write_world(root, config, overwrite=overwrite, progress=progress)
    return config
