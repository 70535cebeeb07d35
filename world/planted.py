"""Planted-shortcut worlds: a world whose training split lets a network cheat.

A *cue* is something that is not part of any class (a corner marker, a background texture, a colour
cast, a watermark-like glyph). In the ``train`` split each cue appears in ``train_rate`` (100 %) of
the images of its class and in ``other_rate`` (0 %) of the others, so a network can learn it as a
shortcut; in every other split (``heldout``) it appears in ``test_rate`` (50 %) of the images of
every class, decorrelated from the label.

A cue that merely co-occurs is not enough: the world's classes are easy (any two parts identify one),
so a network learns the parts as well and barely needs the cue (measured: version 2 of these worlds,
bench/results/audit-planted-v2.json). So in the ``train`` split a share ``confuse_rate`` of the cue
class's images show the parts of *another* class (the cue and the label stay): on those images the
cue is the only evidence of the label, as with a photo set whose watermark, not its content, follows
the label. A network that fits them learns the cue strongly enough to overrule the parts. Each image also gets a cue mask (``cues/<split>/...``,
8-bit cue number per pixel, 0 = no cue), the ground truth of where each cue is.

Whether a trained network *uses* a cue is measured, not assumed (:func:`cue_usage`): every held-out
scene is drawn twice, with the cue and without it, and the network's answers are compared: how
often it still recognises the cue's class without the cue, how often other classes turn into the
cue's class with it.

The images are those of the base world (:mod:`neurflow.world.scene`) with the cues drawn over them,
so everything that reads a world (``World``, the engine, ``score_circuit``) reads a planted world.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from neurflow.world.cache import build_entry, cache_root
from neurflow.world.generate import WORLD_FILE, write_world
from neurflow.world.scene import Scene, centre_square, render_scene
from neurflow.world.spec import ClassDef, WorldConfig

PLANTED_VERSION = 3  # bump when the train split's recipe changes
#: versions whose documents this version still reads (version 2 had no confusing images)
READS_VERSIONS = (2, 3)
CUE_FOLDER = "cues"

#: The drawing of each kind of cue: bump a kind's number when its look changes. A world's cache key
#: carries the numbers of its own cues, so only the worlds that plant a redrawn kind are rebuilt.
#: Drawing 1 is left out of the document (worlds drawn before the numbers existed keep their keys).
#: The glyph is drawing 2, opaque and 1.5x the size of drawing 1, which most networks ignored
#: (bench/results/planted-strong-glyph-experiment-2026-12-07.md).
CUE_DRAWINGS: dict[str, int] = {"corner": 1, "glyph": 2, "texture": 1, "tint": 1}

#: What each kind of cue looks like and what a labeler would call it.
CUE_KINDS: dict[str, str] = {
    "corner": "magenta corner square",
    "glyph": "white x watermark",
    "texture": "diagonal background stripes",
    "tint": "green colour cast",
}


@dataclass(frozen=True)
class Cue:
    """One shortcut: a cue of ``kind`` (a key of :data:`CUE_KINDS`) tied to the class ``class_index``."""

    kind: str
    class_index: int

    @property
    def name(self) -> str:
        return CUE_KINDS[self.kind]


def _default_world() -> WorldConfig:
    return WorldConfig(splits={"train": 100, "heldout": 40})


@dataclass(frozen=True)
class PlantedConfig:
    """A base world plus its cues, and how often each cue appears where."""

    world: WorldConfig = field(default_factory=_default_world)
    cues: tuple[Cue, ...] = ()
    train_rate: float = 1.0  # P(cue | its class) in the train split
    other_rate: float = 0.0  # P(cue | another class) in the train split
    test_rate: float = 0.5  # P(cue | any class) in every other split
    # P(an image of a cue's class shows another class's parts) in the train split (the module docstring)
    confuse_rate: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.world.classes)
        kinds = [c.kind for c in self.cues]
        for cue in self.cues:
            if cue.kind not in CUE_KINDS:
                raise ValueError(f"unknown cue kind {cue.kind!r}; choose from {list(CUE_KINDS)}")
            if not 0 <= cue.class_index < n:
                raise ValueError(f"cue {cue.kind!r}: class_index {cue.class_index} is not a class of a {n}-class world")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each cue kind may be planted once per world, got {kinds}")
        for name in ("train_rate", "other_rate", "test_rate", "confuse_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if "train" not in self.world.splits:
            raise ValueError("a planted world needs a 'train' split (where the cues are correlated)")

    def rate(self, cue: Cue, split: str, class_index: int) -> float:
        if split != "train":
            return self.test_rate
        return self.train_rate if class_index == cue.class_index else self.other_rate

    def to_json(self) -> dict[str, Any]:
        return {"version": PLANTED_VERSION, "cues": [_cue_json(c) for c in self.cues], "train_rate": self.train_rate,
                "other_rate": self.other_rate, "test_rate": self.test_rate, "confuse_rate": self.confuse_rate}

    def key(self) -> str:
        payload = json.dumps({"world": self.world.key(), **self.to_json()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def clean(self) -> PlantedConfig:
        """The same world without cues (and so without confusing images): the control a shortcut model is
        compared with, and the network a shortcut fine-tune starts from."""
        return replace(self, cues=(), confuse_rate=0.0)


def _cue_json(cue: Cue) -> dict[str, Any]:
    drawing = CUE_DRAWINGS[cue.kind]
    return asdict(cue) | ({"drawing": drawing} if drawing > 1 else {})


# -- drawing -----------------------------------------------------------------------------------------

#: the split name that seeds the confusing images' scenes (so they are not copies of real images)
_CONFUSE_SEED = "confuse"


def scene_class(config: PlantedConfig, cls: ClassDef, split: str, number: int) -> ClassDef:
    """The class whose parts image ``number`` of ``cls`` shows: ``cls`` itself, except for the
    confusing images of a cue's class in the train split (another class, drawn at random)."""
    if split != "train" or not config.confuse_rate or cls.index not in {c.class_index for c in config.cues}:
        return cls
    rng = np.random.default_rng([config.world.seed, zlib.crc32(_CONFUSE_SEED.encode()), cls.index, number])
    if rng.random() >= config.confuse_rate:
        return cls
    others = [c for c in config.world.classes if c.index != cls.index]
    return others[int(rng.integers(len(others)))]


def _cue_present(config: PlantedConfig, k: int, split: str, class_index: int, number: int) -> bool:
    rng = np.random.default_rng([config.world.seed, zlib.crc32(split.encode()), class_index, number, 1000 + k])
    return bool(rng.random() < config.rate(config.cues[k], split, class_index))


def _corner(image: np.ndarray, side: float, ox: float, oy: float) -> np.ndarray:
    u = side / 72.0
    x0, y0, s = int(round(ox + 2 * u)), int(round(oy + 2 * u)), max(3, int(round(7 * u)))
    inside = np.zeros(image.shape[:2], dtype=bool)
    inside[y0:y0 + s, x0:x0 + s] = True
    image[inside] = (230.0, 40.0, 230.0)
    return inside


def _glyph(image: np.ndarray, side: float, ox: float, oy: float) -> np.ndarray:
    # an opaque white X in the lower right corner, where watermarks sit
    u = side / 72.0
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy, half = ox + side - 12 * u, oy + side - 12 * u, 9 * u
    dx, dy = xs - cx, ys - cy
    near = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    inside = near & ((np.abs(dx - dy) <= 2.7 * u) | (np.abs(dx + dy) <= 2.7 * u))
    image[inside] = 250.0
    return inside


def _texture(image: np.ndarray, side: float, background: np.ndarray) -> np.ndarray:
    u = side / 72.0
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    stripes = np.sign(np.sin(2 * math.pi * (xs + ys) / (5 * u)))
    image[background] += 22.0 * stripes[background][:, None]
    return background.copy()


def _tint(image: np.ndarray) -> np.ndarray:
    image *= 0.8
    image += 0.2 * np.array([40.0, 200.0, 60.0])
    return np.ones(image.shape[:2], dtype=bool)


def draw_cue(kind: str, image: np.ndarray, part_mask: np.ndarray, side: float, ox: float, oy: float) -> np.ndarray:
    """Draw a cue of ``kind`` on ``image`` (float RGB, in place) for the centre square at (``ox``, ``oy``)
    of ``side`` pixels; returns where it was drawn. The corner hides the parts under it in ``part_mask``."""
    if kind == "corner":
        where = _corner(image, side, ox, oy)
        part_mask[where] = 0  # the opaque marker hides what was under it
        return where
    if kind == "glyph":
        return _glyph(image, side, ox, oy)
    if kind == "texture":
        return _texture(image, side, part_mask == 0)
    return _tint(image)


def render_planted(config: PlantedConfig, cls: ClassDef, split: str, number: int,
                   force: Mapping[int, bool] | None = None) -> Scene:
    """Image ``number`` of ``cls`` in ``split`` with its cues; ``force`` maps cue numbers (0-based, in
    ``config.cues`` order) to present/absent regardless of the rates (the counterfactual pairs of
    :func:`cue_usage`). The scene's ``extra_masks["cues"]`` holds cue number + 1 per pixel."""
    shown = scene_class(config, cls, split, number)
    base = render_scene(config.world, cls, split, number) if shown is cls else \
        render_scene(config.world, shown, f"{split}-{_CONFUSE_SEED}", number)
    image = base.rgb.astype(np.float64)
    part_mask = base.mask.copy()
    cue_mask = np.zeros(part_mask.shape, dtype=np.uint8)
    ox, oy, side = centre_square(*config.world.image_size)
    force = force or {}
    # the colour cast goes last so that it also tints the other cues, as a cast of the whole photo would
    order = sorted(range(len(config.cues)), key=lambda k: config.cues[k].kind == "tint")
    for k in order:
        cue = config.cues[k]
        present = force[k] if k in force else _cue_present(config, k, split, cls.index, number)
        if not present:
            continue
        where = draw_cue(cue.kind, image, part_mask, side, ox, oy)
        # cues drawn later win the pixel, except the whole-image cast, which only claims empty pixels
        cue_mask[where & ((cue_mask == 0) | (cue.kind != "tint"))] = k + 1
    rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Scene(rgb=rgb, mask=part_mask, placements=base.placements, extra_masks={CUE_FOLDER: cue_mask})


# -- on disk and in the cache ------------------------------------------------------------------------


def planted_dir(config: PlantedConfig, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / f"planted-v{PLANTED_VERSION}-{config.key()}"


def write_planted(root: str | Path, config: PlantedConfig, *, overwrite: bool = False, progress: bool = False) -> Path:
    """Write the planted world under ``root`` (layout of :mod:`neurflow.world.generate` plus ``cues/``)."""
    document = {"planted": config.to_json() | {
        "cue_masks": CUE_FOLDER,
        "cue_list": [{"number": k + 1, "kind": c.kind, "name": c.name, "class_index": c.class_index,
                      "class_name": config.world.classes[c.class_index].name} for k, c in enumerate(config.cues)],
    }}
    return write_world(root, config.world, overwrite=overwrite, progress=progress,
                       render=lambda cls, split, n: render_planted(config, cls, split, n), document=document)


def ensure_planted_world(config: PlantedConfig, cache_dir: str | Path | None = None, *, progress: bool = False) -> Path:
    """The root of the planted world in the cache, written once."""
    return build_entry(planted_dir(config, cache_dir), WORLD_FILE,
                       lambda tmp: write_planted(tmp, config, overwrite=True, progress=progress))


#: how a shortcut network is made from its clean twin: a fine-tune on the planted train split, as a
#: real model picks up a shortcut from a new data set; the neuron ids then mean the same channels
#: in both networks, so that ``neurflow diff`` can match their groups. Chosen on the dev world
#: (bench/results/audit-recipe-dev.json): 4 epochs at a peak learning rate of 1e-3.
FINE_TUNE_EPOCHS, FINE_TUNE_LR = 4, 1e-3


def ensure_planted_model(config: PlantedConfig, train=None, cache_dir: str | Path | None = None, *,
                         fine_tune=None, progress: bool = False, threads: int | None = 1):
    """The network of a planted world, trained on first use and cached beside the world.

    Without cues (``config.clean()``): a resnet18 trained from scratch with ``train`` (default 3
    epochs). With cues: the shortcut network, a fine-tune (``fine_tune``, default :data:`FINE_TUNE_EPOCHS`
    at :data:`FINE_TUNE_LR`; its ``init`` is filled in) of that clean network on the planted train split."""
    from neurflow.world.train import META_FILE, TrainConfig, WorldModel, model_dir, train_into

    train = train or TrainConfig(epochs=3)
    if config.cues:
        base = ensure_planted_model(config.clean(), train, cache_dir, progress=progress, threads=threads)
        fine_tune = replace(fine_tune or TrainConfig(epochs=FINE_TUNE_EPOCHS, lr=FINE_TUNE_LR, input_size=train.input_size),
                            init=str(base.weights))
        train = fine_tune
    root = ensure_planted_world(config, cache_dir, progress=progress)
    final = build_entry(model_dir(root, train), META_FILE,
                        lambda tmp: train_into(tmp, root, train, progress, threads))
    return WorldModel.load(final, root)


def read_planted(root: str | Path) -> PlantedConfig:
    """The planted config of a world on disk (``ValueError`` if the world has no cues section)."""
    doc = json.loads((Path(root) / WORLD_FILE).read_text())
    planted = doc.get("planted")
    if not isinstance(planted, dict):
        raise ValueError(f"{root} is not a planted world: its {WORLD_FILE} has no 'planted' section")
    if planted.get("version") not in READS_VERSIONS:
        raise ValueError(f"{root}: planted version {planted.get('version')!r}; this version reads {list(READS_VERSIONS)}")
    for c in planted["cues"]:
        # the config re-draws cues (cue_usage), so a world drawn otherwise would be measured with the wrong look
        if c["kind"] in CUE_DRAWINGS and c.get("drawing", 1) != CUE_DRAWINGS[c["kind"]]:
            raise ValueError(f"{root}: its {c['kind']!r} cue is drawing {c.get('drawing', 1)}; this version draws "
                             f"{c['kind']!r} as drawing {CUE_DRAWINGS[c['kind']]}: build the world again")
    return PlantedConfig(world=WorldConfig.from_json(doc["config"]),
                         cues=tuple(Cue(c["kind"], int(c["class_index"])) for c in planted["cues"]),
                         train_rate=planted["train_rate"], other_rate=planted["other_rate"],
                         test_rate=planted["test_rate"], confuse_rate=planted.get("confuse_rate", 0.0))


def cue_mask(root: str | Path, image_rel_path: str) -> np.ndarray:
    """The cue mask of an image (path relative to ``root/images``): cue number + 1 per pixel."""
    with Image.open(Path(root) / CUE_FOLDER / image_rel_path) as im:
        return np.asarray(im)


# -- does the network use its cues? ------------------------------------------------------------------


@dataclass(frozen=True)
class CueUsage:
    """The network's answers on the same held-out scenes drawn with and without one cue.

    ``accuracy_with`` / ``accuracy_without``: share of the cue class's images classified right;
    ``to_class_with`` / ``to_class_without``: share of other classes' images classified as the cue's
    class; ``logit_shift``: mean change of the cue class's logit over all images when the cue is added.
    """

    cue: Cue
    images: int
    accuracy_with: float
    accuracy_without: float
    to_class_with: float
    to_class_without: float
    logit_shift: float

    @property
    def used(self) -> bool:
        """The network relies on the cue: removing it costs, or adding it converts, >= 10 % of images."""
        return (self.accuracy_with - self.accuracy_without >= USE_THRESHOLD
                or self.to_class_with - self.to_class_without >= USE_THRESHOLD)

    def sentence(self) -> str:
        return (f"{self.cue.name} (class {self.cue.class_index}): removing it takes the class's accuracy from "
                f"{self.accuracy_with:.0%} to {self.accuracy_without:.0%}; adding it to other classes' images "
                f"turns {self.to_class_with:.0%} of them into the class (without it: {self.to_class_without:.0%})")


USE_THRESHOLD = 0.10


def cue_usage(model, config: PlantedConfig, split: str = "heldout", per_class: int | None = None) -> list[CueUsage]:
    """Measure every cue of ``config`` on ``model`` (a :class:`neurflow.world.train.WorldModel`):
    each scene of ``split`` drawn with only that cue and with no cue."""
    import torch

    from neurflow.core.images import Preprocess

    net = model.load_model()
    prep = Preprocess(model.meta["input_size"], model.meta["mean"], model.meta["std"])
    count = config.world.splits[split] if per_class is None else min(per_class, config.world.splits[split])
    classes = config.world.classes
    no_cue = {k: False for k in range(len(config.cues))}

    def logits(force: dict[int, bool]) -> torch.Tensor:
        pixels = [prep(Image.fromarray(render_planted(config, cls, split, n, force).rgb))
                  for cls in classes for n in range(count)]
        with torch.no_grad():
            return torch.cat([net(torch.stack(pixels[i:i + 128])) for i in range(0, len(pixels), 128)])

    labels = torch.tensor([cls.index for cls in classes for _ in range(count)])
    without = logits(no_cue)
    out = []
    for k, cue in enumerate(config.cues):
        with_cue = logits(no_cue | {k: True})
        own, others = labels == cue.class_index, labels != cue.class_index
        out.append(CueUsage(
            cue=cue, images=len(labels),
            accuracy_with=float((with_cue[own].argmax(1) == cue.class_index).float().mean()),
            accuracy_without=float((without[own].argmax(1) == cue.class_index).float().mean()),
            to_class_with=float((with_cue[others].argmax(1) == cue.class_index).float().mean()),
            to_class_without=float((without[others].argmax(1) == cue.class_index).float().mean()),
            logit_shift=float((with_cue[:, cue.class_index] - without[:, cue.class_index]).mean()),
        ))
    return out


# -- the planted suite: worlds where the audit's rules were chosen, and worlds it is only reported on ---


@dataclass(frozen=True)
class PlantedWorld:
    """A named planted world of the suite; ``role`` "dev" (rules may be chosen on it) or "held-out"."""

    name: str
    role: str
    config: PlantedConfig

    @property
    def held_out(self) -> bool:
        return self.role == "held-out"


#: the share of a cue class's train images that show another class's parts, chosen on the dev world
SUITE_CONFUSE_RATE = 0.3


def _suite_world(variant: str, cues: tuple[Cue, ...], seed: int = 0) -> PlantedConfig:
    return PlantedConfig(world=WorldConfig(seed=seed, splits={"train": 100, "heldout": 40}, variant=variant), cues=cues,
                         confuse_rate=SUITE_CONFUSE_RATE)


#: The audit's rules were chosen on the dev world (the corner marker and the colour cast on the
#: standard parts); the held-out worlds change the part set and plant the other two kinds of cue
#: (and the dev kinds on other classes), so that a rule fitted to one cue's look does not pass.
PLANTED_SUITE: dict[str, PlantedWorld] = {w.name: w for w in (
    PlantedWorld("standard-corner-tint", "dev", _suite_world("standard", (Cue("corner", 1), Cue("tint", 6)))),
    PlantedWorld("shapes2-glyph-texture", "held-out", _suite_world("shapes2", (Cue("glyph", 2), Cue("texture", 5)))),
    PlantedWorld("shapes3-corner-glyph", "held-out", _suite_world("shapes3", (Cue("corner", 3), Cue("glyph", 4)), seed=1)),
    # defined after the diff's off-class reliance was built (2026-12-07), when the two worlds above had
    # seen it: a part set no planted world used, cues on other classes; no rule was chosen on it
    PlantedWorld("objects-tint-texture", "held-out", _suite_world("objects", (Cue("tint", 3), Cue("texture", 6)), seed=2)),
    # defined after the reliance's drops were clipped at 0 (2026-12-07), a rule objects-tint-texture
    # inspired: the shapes3 parts had only carried the corner and the glyph, which its network barely
    # used; here the two cues every network so far used, on classes no planted cue had; no rule chosen on it
    PlantedWorld("shapes3-tint-texture", "held-out", _suite_world("shapes3", (Cue("tint", 0), Cue("texture", 7)), seed=3)),
    # defined after the audit's off-class rule clipped the control mean at 0 (2026-12-07), a rule the clean
    # twins of the two worlds above and of the dev world inspired: the standard parts (the dev world's) had
    # carried only the corner and the cast on classes 1 and 6; here the texture, and the cast on another class
    PlantedWorld("standard-texture-tint", "held-out", _suite_world("standard", (Cue("texture", 2), Cue("tint", 4)), seed=4)),
    # defined after the audit ordered its findings by their lift in logits and required a lift of min_lift
    # (2026-12-07), rules read off every world above: the cast and the corner on the shapes2 parts (which had
    # carried the glyph and the texture), and the corner and the texture on the objects parts; none is tuned on
    PlantedWorld("shapes2-tint-corner", "held-out", _suite_world("shapes2", (Cue("tint", 1), Cue("corner", 6)), seed=5)),
    PlantedWorld("objects-corner-texture", "held-out", _suite_world("objects", (Cue("corner", 0), Cue("texture", 5)),
                                                                    seed=6)),
    # defined after min_importance went from 0.2 to 0.1 (2026-12-07), a value read off the four worlds first
    # measured with the circuits a user gets (the dev world, standard-texture-tint and the two above): the
    # glyph, which only the shapes parts had carried, on the objects parts, and the cast on a class no cast had
    PlantedWorld("objects-glyph-tint", "held-out", _suite_world("objects", (Cue("glyph", 1), Cue("tint", 7)), seed=7)),
    # defined after the audit's off-class rule also required the lift against the class each image shows
    # (2026-12-07), a rule the clean twins of objects-tint-texture inspired and the six worlds above it saw:
    # the glyph, which the standard parts never carried, and the texture on classes no standard cue had
    PlantedWorld("standard-glyph-texture", "held-out", _suite_world("standard", (Cue("glyph", 3), Cue("texture", 5)),
                                                                    seed=8)),
    # defined after the glyph became drawing 2 (2026-12-07), with no rule changed since the one above, when three
    # of the four rebuilt glyph worlds had been audited (one glyph missed); their number (two) was fixed then:
    # the corner and the new glyph on objects classes no cue had, the new glyph and the cast on shapes3 ones
    PlantedWorld("objects-corner-glyph", "held-out", _suite_world("objects", (Cue("corner", 2), Cue("glyph", 4)),
                                                                  seed=9)),
    PlantedWorld("shapes3-glyph-tint", "held-out", _suite_world("shapes3", (Cue("glyph", 1), Cue("tint", 6)), seed=10)),
    # defined for the findings' order by strength alone (2026-12-07), read off the six worlds seen for the margin
    # rules and shapes2-glyph-texture and shapes3-corner-glyph: fitted while the order was chosen, audited after
    # it was committed; the corner and the glyph on shapes2 classes no cue had
    PlantedWorld("shapes2-corner-glyph", "held-out", _suite_world("shapes2", (Cue("corner", 3), Cue("glyph", 4)),
                                                                  seed=11)),
)}
