"""Ground truth of a generated world: which part lies in a box, and how pure a circuit's groups are.

Boxes are ``[x0, y0, x1, y1]`` in source-image pixels, half-open, the convention of the circuit
document, so the pixels of a box are ``mask[y0:y1, x0:x1]``. Boxes are clipped to the image.

The dominant part of a box is the part with the most pixels in it, provided it covers at least
``MIN_PART_FRACTION`` (10 %) of the box; otherwise the box is "background" (``None``). At the default
geometry (72 px centre square, parts on 20-28 px discs) and the engine's default granularities
(patch sides 72, 36 and 18 source px) this means: an 18 px patch on a part is that part; a 36 px
patch holding a whole part is that part for every part but the smallest stars (parts cover 39 % (star)
to 100 % (circle) of their disc, so 9.5 % to 47 % of such a patch); a whole-image patch holds every
part at 3-12 % and is attributed only when it holds a large red circle. A fixed box fraction is a
simple, explainable rule; one that changed with the patch size would make purities incomparable.

Purity of a set of patches is the fraction of them whose dominant part is the set's majority part
(background patches count against it). A group of a circuit that has found a planted part has purity
near 1.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from neurflow.core.circuit import Circuit, Exemplar
from neurflow.core.circuit_arrays import read_circuit
from neurflow.world.generate import WORLD_FILE
from neurflow.world.spec import SCHEMA_VERSION, ClassDef, WorldConfig, world_document

MIN_PART_FRACTION = 0.10
_MASK_CACHE_SIZE = 4096


@dataclass
class World:
    """A generated world on disk. Paths of images are relative to ``root/images``,
    e.g. ``"train/class_0_redcircle_orangering_stripedpatch/0003.png"``."""

    root: Path
    config: WorldConfig
    part_names: dict[int, str]  # mask value -> part name (0 is not in it)
    classes: tuple[ClassDef, ...]
    _masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: str | Path) -> World:
        root = Path(root)
        path = root / WORLD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{root} is not a generated world: {WORLD_FILE} is missing")
        doc = json.loads(path.read_text())
        if doc.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"{path}: unsupported world schema {doc.get('schema')!r}; this version reads {SCHEMA_VERSION!r}")
        config = WorldConfig.from_json(doc["config"])
        classes = tuple(ClassDef(c["index"], c["name"], tuple(c["parts"])) for c in doc["classes"])
        if world_document(config)["classes"] != doc["classes"]:
            raise ValueError(f"{path}: class definitions differ from this version's; regenerate the world")
        return cls(root=root, config=config, part_names={p["id"]: p["name"] for p in doc["parts"]}, classes=classes)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def images(self, split: str) -> list[str]:
        """Relative paths of every image of a split, in sorted order."""
        if split not in self.config.splits:
            raise KeyError(f"no split {split!r}; splits are {list(self.config.splits)}")
        return sorted(p.relative_to(self.images_dir).as_posix() for p in (self.images_dir / split).rglob("*.png"))

    # -- masks ---------------------------------------------------------------------------------
    def mask(self, image_rel_path: str) -> np.ndarray:
        """The part-id mask (H, W) of an image."""
        key = _normalise(image_rel_path)
        cached = self._masks.get(key)
        if cached is None:
            path = self.root / "masks" / key
            if not path.is_file():
                raise FileNotFoundError(f"no mask for image {image_rel_path!r} in world {self.root}")
            with Image.open(path) as im:
                cached = np.asarray(im, dtype=np.uint8).copy()
            if len(self._masks) >= _MASK_CACHE_SIZE:
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = cached
        return cached

    def part_fractions(self, image_rel_path: str, box: Sequence[int]) -> dict[str, float]:
        """The parts present in ``box`` with the fraction of the box's pixels each covers,
        largest first (background omitted). Empty for an empty box."""
        mask = self.mask(image_rel_path)
        height, width = mask.shape
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x0 >= x1 or y0 >= y1:
            return {}
        region = mask[y0:y1, x0:x1]
        counts = np.bincount(region.reshape(-1), minlength=256)
        total = region.size
        found = [(int(n), pid) for pid, n in enumerate(counts) if pid != 0 and n > 0]
        # Largest first; equal counts by part id, so the order is deterministic.
        found.sort(key=lambda item: (-item[0], item[1]))
        return {self._name(pid): n / total for n, pid in found}

    def dominant_part(self, image_rel_path: str, box: Sequence[int], min_fraction: float = MIN_PART_FRACTION) -> str | None:
        """The part with the most pixels in ``box``, or ``None`` (background) when even that part
        covers less than ``min_fraction`` of the box."""
        fractions = self.part_fractions(image_rel_path, box)
        if not fractions:
            return None
        name, fraction = next(iter(fractions.items()))
        return name if fraction >= min_fraction else None

    def _name(self, part_id: int) -> str:
        try:
            return self.part_names[part_id]
        except KeyError:
            raise ValueError(f"mask value {part_id} is not a part of world {self.root}") from None

    # -- paths of a circuit ---------------------------------------------------------------------
    def relative_path(self, path: str, images_root: str | Path | None = None) -> str:
        """Map an image path of a circuit (relative to the folder the engine was given) to a path
        relative to ``root/images``.

        With ``images_root`` the mapping is exact. Without it the path is tried as is and under each
        split; since every split has the same file names, a bare ``class/nnnn.png`` is ambiguous
        when several splits exist, and then ``images_root`` is required.
        """
        if images_root is not None:
            absolute = (Path(images_root) / path).resolve()
            try:
                return absolute.relative_to(self.images_dir.resolve()).as_posix()
            except ValueError:
                raise ValueError(f"image {absolute} is not inside world images folder {self.images_dir}") from None
        if Path(path).is_absolute():
            return self.relative_path(path, images_root="/")
        candidates = [_normalise(path)] + [f"{split}/{_normalise(path)}" for split in self.config.splits]
        existing = [c for c in dict.fromkeys(candidates) if (self.root / "masks" / c).is_file()]
        if not existing:
            raise ValueError(f"image {path!r} is not an image of world {self.root}")
        if len(existing) > 1:
            raise ValueError(f"image {path!r} exists in several splits ({existing}); pass images_root")
        return existing[0]


def _normalise(path: str) -> str:
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    if not parts or ".." in parts or parts[0] == "/":
        raise ValueError(f"image path {path!r} must be relative to the world's images folder")
    return "/".join(parts)


# -- purity -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Purity:
    majority_part: str | None
    purity: float  # fraction of patches whose dominant part is majority_part (0.0 when empty)
    n: int
    counts: dict[str, int]  # dominant part -> number of patches; "background" for None


def purity(dominants: Iterable[str | None], part_order: Sequence[str] = ()) -> Purity:
    """Majority part and purity of a list of dominant parts. Ties go to the part earlier in
    ``part_order`` (then alphabetical), so the answer never depends on patch order."""
    items = list(dominants)
    counts = Counter(d for d in items if d is not None)
    rank = {name: i for i, name in enumerate(part_order)}
    majority = min(counts, key=lambda p: (-counts[p], rank.get(p, len(rank)), p)) if counts else None
    value = counts[majority] / len(items) if majority is not None else 0.0
    report = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    if None in items:
        report["background"] = items.count(None)
    return Purity(majority, value, len(items), report)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def score_circuit(
    circuit: Circuit | str | Path,
    world_root: str | Path,
    images_root: str | Path | None = None,
    min_fraction: float = MIN_PART_FRACTION,
) -> dict[str, Any]:
    """Purity of every neuron group of a circuit against the world's ground truth.

    ``circuit`` is a :class:`Circuit` or the path of its JSON document; ``images_root`` is the
    folder the engine was given (e.g. ``world_root/images/train``); see :meth:`World.relative_path`.

    Per group: the purity of its exemplar patches (``purity``, ``majority_part``) and, as a larger
    sample, of every top patch of its member concepts (``patch_purity``, ``patch_majority_part``).
    Per layer and overall: the means over groups (``None`` where there are no groups).
    """
    if not isinstance(circuit, Circuit):
        circuit = read_circuit(circuit)
    world = World.load(world_root)
    order = [world.part_names[k] for k in sorted(world.part_names)]
    paths: dict[int, str] = {}

    def dominant(ex: Exemplar) -> str | None:
        if ex.image not in paths:
            if not 0 <= ex.image < len(circuit.images):
                raise ValueError(f"exemplar refers to image {ex.image}; the circuit has {len(circuit.images)} images")
            paths[ex.image] = world.relative_path(circuit.images[ex.image].path, images_root)
        return world.dominant_part(paths[ex.image], ex.box, min_fraction)

    groups: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    for index, layer in enumerate(circuit.layers):
        concepts = {(n.id, c.id): c for n in layer.neurons for c in n.concepts}
        layer_groups = []
        for group in layer.groups:
            ex = purity((dominant(e) for e in group.exemplars), order)
            patches = [p for m in group.members if (m.neuron, m.concept) in concepts for p in concepts[(m.neuron, m.concept)].patches]
            pp = purity((dominant(p) for p in patches), order)
            layer_groups.append({
                "id": group.id, "layer": layer.name, "layer_index": index,
                "majority_part": ex.majority_part, "purity": ex.purity, "n_exemplars": ex.n, "counts": ex.counts,
                "patch_majority_part": pp.majority_part, "patch_purity": pp.purity if pp.n else None, "n_patches": pp.n,
            })
        groups.extend(layer_groups)
        layers.append({
            "index": index, "name": layer.name, "n_groups": len(layer_groups),
            "mean_purity": _mean([g["purity"] for g in layer_groups]),
            "mean_patch_purity": _mean([g["patch_purity"] for g in layer_groups if g["patch_purity"] is not None]),
        })
    return {
        "min_fraction": min_fraction,
        "n_groups": len(groups),
        "mean_purity": _mean([g["purity"] for g in groups]),
        "mean_patch_purity": _mean([g["patch_purity"] for g in groups if g["patch_purity"] is not None]),
        "layers": layers,
        "groups": groups,
    }
