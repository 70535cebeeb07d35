"""A world together with its network and its CLIP, built once and side by side.

:class:`WorldSetup` names the three configs that key the three cache entries (the world, its
resnet18, its world CLIP). :data:`DEMO` is ``make demo``'s: the standard world's parts and classes, a
quarter of its images, a sixth of its network's training steps, a lighter CLIP. The standard world
(``WorldConfig()``, 3,200 images, its network and CLIP at their defaults) stays the reference of the
bench, the slow tests and the docs, so their numbers keep their meaning.

:func:`ensure_setup` trains whatever is missing, on one torch thread (two threads of one small
network spin-wait for each other whenever anything else runs: docs/world.md). When both the network
and the CLIP are missing it trains them at once, the CLIP in a child process, so two cores do two jobs;
once the (shorter) CLIP is done, the network's training takes the cores that are idle then.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from neurflow.core.cpu import idle_cores
from neurflow.world import clip, train
from neurflow.world.cache import ensure_world
from neurflow.world.spec import WorldConfig


@dataclass(frozen=True)
class WorldSetup:
    """A world, how its resnet18 is trained and how its CLIP is trained (defaults: the standard world's)."""

    world: WorldConfig = field(default_factory=WorldConfig)
    model: train.TrainConfig = field(default_factory=train.TrainConfig)
    clip: clip.TrainConfig = field(default_factory=clip.TrainConfig)


#: ``make demo``'s world: 64 training images per class feed the network (6 epochs, 48 steps: held-out
#: accuracy 1.000) and the CLIP; 32 held-out images per class are what the demo's job reads (it keeps
#: 32 per class). Sized for the 5-minute first run (docs/world.md). The CLIP has the ResNet image
#: tower: at this budget (200 steps of 48 crops) it names 0.996 of the held-out part crops, where the
#: ViT tower still confused the striped and checkered textures after 300 steps of 64.
DEMO = WorldSetup(
    world=WorldConfig(splits={"train": 64, "heldout": 32}),
    model=train.TrainConfig(epochs=6),
    clip=clip.TrainConfig(steps=200, batch_size=48, arch="resnet"),
)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _train_clip(world_root: Path, config: clip.TrainConfig) -> Path:
    return clip.ensure_world_clip(world_root, config, log=_log)


def _clip_available() -> bool:
    try:
        import neurflow.labeler.labeling  # noqa: F401  (open_clip and the labeler: the ``clip`` extra)
    except ImportError as exc:
        _log(f"note: CLIP labeling unavailable ({exc}); circuits will be unlabeled")
        return False
    return True


class _ThreadsBeside:
    """One torch thread while ``job`` trains beside us; once it is done, ours plus the cores idle then."""

    def __init__(self, job) -> None:
        self.job = job
        self.after: int | None = None

    def __call__(self) -> int:
        if not self.job.done():
            return 1
        if self.after is None:
            # our own thread keeps one core busy while this samples
            self.after = min(os.cpu_count() or 1, 1 + idle_cores())
        return self.after


def ensure_setup(setup: WorldSetup, cache_dir: str | Path | None = None, *, progress: bool = True,
                 with_clip: bool = True) -> tuple[train.WorldModel, Path | None]:
    """The setup's trained network and its CLIP bundle folder (``None`` without ``with_clip`` or
    without the ``clip`` extra), each built on first use and cached."""
    root = ensure_world(setup.world, cache_dir, progress=progress)
    clip_wanted = with_clip and _clip_available()
    model_missing = not (train.model_dir(root, setup.model) / train.META_FILE).is_file()
    clip_missing = clip_wanted and not (clip.bundle_dir(root, setup.clip) / clip.METRICS_FILE).is_file()
    if model_missing and clip_missing:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            clip_job = pool.submit(_train_clip, root, setup.clip)
            model = train.ensure_world_model(cache_dir, setup.world, setup.model, progress=progress,
                                             threads=_ThreadsBeside(clip_job))
            return model, clip_job.result()
    model = train.ensure_world_model(cache_dir, setup.world, setup.model, progress=progress, threads=1)
    return model, _train_clip(root, setup.clip) if clip_wanted else None
