"""Which image patches stand for a group, and where they come from.

* A group's *patches* are all top patches of its member concepts (``Concept.patches``), not only the
  five display exemplars, interleaved member by member so that a cap keeps every member represented;
  each votes with its *activation weight* (how strongly its member fires on it, relative to that
  member's strongest patch).
* Part of them can be *held out* (deterministically, by seed) so that labels can later be tested on
  patches they were not made from (``neurflow evaluate``, held-out retrieval).
* The *reference pool* is patches of the same run that nothing selected: random crops of the run's
  images at the circuit's granularities. Contrasting a group with it keeps concepts that every patch
  of the run shares (the class's background, the dataset's colour cast) from winning.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from neurflow.core.circuit import Circuit, Exemplar, Group
from neurflow.core.image_files import open_rgb

PatchKey = tuple[int, int, int, int, int]  # (image, x0, y0, x1, y1)


def patch_key(ex: Exemplar) -> PatchKey:
    x0, y0, x1, y1 = ex.box
    return (ex.image, x0, y0, x1, y1)


def group_patches(circuit: Circuit, layer_index: int, group: Group) -> list[Exemplar]:
    """The group's exemplars first, then every top patch of its members, round-robin, without repeats."""
    layer = circuit.layers[layer_index]
    neurons = {n.id: n for n in layer.neurons}
    lists: list[list[Exemplar]] = []
    for member in group.members:
        neuron = neurons.get(member.neuron)
        concept = next((c for c in neuron.concepts if c.id == member.concept), None) if neuron else None
        if concept is not None:
            lists.append(list(concept.patches) or list(concept.exemplars))
    out: list[Exemplar] = []
    seen: set[PatchKey] = set()

    def take(ex: Exemplar) -> None:
        key = patch_key(ex)
        if key not in seen:
            seen.add(key)
            out.append(ex)

    for ex in group.exemplars:
        take(ex)
    depth = max((len(x) for x in lists), default=0)
    for i in range(depth):
        for patches in lists:
            if i < len(patches):
                take(patches[i])
    return out


def activation_weights(circuit: Circuit, layer_index: int, group: Group, patches: list[Exemplar]) -> list[float]:
    """How strongly the group fires on each patch, in [0, 1]: per member concept, the patch's recorded
    activation over that concept's highest (neurons differ in scale), the largest over the members
    the patch belongs to; 1 for a patch no member recorded (a display exemplar of another run)."""
    layer = circuit.layers[layer_index]
    neurons = {n.id: n for n in layer.neurons}
    weight: dict[PatchKey, float] = {}
    for member in group.members:
        neuron = neurons.get(member.neuron)
        concept = next((c for c in neuron.concepts if c.id == member.concept), None) if neuron else None
        if concept is None:
            continue
        recorded = list(concept.patches) or list(concept.exemplars)
        peak = max((ex.activation for ex in recorded), default=0.0)
        if peak <= 0:
            continue
        for ex in recorded:
            key = patch_key(ex)
            weight[key] = max(weight.get(key, 0.0), min(max(ex.activation / peak, 0.0), 1.0))
    return [weight.get(patch_key(p), 1.0) for p in patches]


def split_holdout(
    patches: list[Exemplar], fraction: float, seed: int, keep: set[PatchKey] = frozenset(), min_keep: int = 3
) -> tuple[list[Exemplar], list[Exemplar]]:
    """(used for labeling, held out), in input order. Patches in ``keep`` (the display exemplars) are
    never held out, and at least ``min_keep`` patches stay on the labeling side."""
    n_out = int(round(len(patches) * fraction))
    n_out = max(0, min(n_out, len(patches) - min_keep))
    candidates = [i for i, p in enumerate(patches) if patch_key(p) not in keep]
    n_out = min(n_out, len(candidates))
    if n_out == 0:
        return list(patches), []
    rng = random.Random(seed)
    held = set(rng.sample(candidates, n_out))
    return [p for i, p in enumerate(patches) if i not in held], [p for i, p in enumerate(patches) if i in held]


def random_boxes(circuit: Circuit, count: int, seed: int) -> list[Exemplar]:
    """Random square crops of the run's images at the circuit's granularities, in source pixels.

    Like the engine's patches they lie inside the centre square that the model sees (the shorter
    side, centred), with a side of ``granularity x`` that square's side."""
    if not circuit.images or count <= 0:
        return []
    grans = circuit.params.granularities
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ref = rng.choice(circuit.images)
        square = min(ref.width, ref.height)
        ox, oy = (ref.width - square) // 2, (ref.height - square) // 2
        side = max(1, int(round(square * rng.choice(grans))))
        x0 = ox + rng.randint(0, square - side)
        y0 = oy + rng.randint(0, square - side)
        out.append(Exemplar(image=ref.id, box=[x0, y0, x0 + side, y0 + side], activation=0.0))
    return out


def all_concept_patches(circuit: Circuit) -> list[Exemplar]:
    seen: set[PatchKey] = set()
    out = []
    for layer in circuit.layers:
        for neuron in layer.neurons:
            for concept in neuron.concepts:
                for ex in concept.patches or concept.exemplars:
                    key = patch_key(ex)
                    if key not in seen:
                        seen.add(key)
                        out.append(ex)
    return out


def reference_pool(circuit: Circuit, size: int, seed: int) -> list[Exemplar]:
    """Random crops of the run's images at the circuit's granularities: what a patch of the run looks
    like when nothing selected it. Concept patches are left out on purpose: they are the circuit's
    concepts by construction, and contrasting a group with them would cancel the very concepts that
    the groups are about."""
    return random_boxes(circuit, size, seed + 2)


@dataclass
class PatchLoader:
    """Cuts exemplar patches out of the run's source images (``Circuit.images[i].path`` under ``root``)."""

    circuit: Circuit
    root: Path
    cache_size: int = 256

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise ValueError(f"patch source {self.root} is not a folder; pass the data root the circuit's image paths are relative to")
        self._paths = {ref.id: ref.path for ref in self.circuit.images}
        self._images: OrderedDict[int, Image.Image] = OrderedDict()

    def image(self, image_id: int) -> Image.Image:
        if image_id in self._images:
            self._images.move_to_end(image_id)
            return self._images[image_id]
        if image_id not in self._paths:
            raise ValueError(f"exemplar refers to image {image_id}, which is not in the circuit's image list")
        path = self.root / self._paths[image_id]
        if not path.is_file():
            raise ValueError(f"source image {path} of the circuit is missing; is {self.root} the data root of this run?")
        img = open_rgb(path)  # ValueError naming the file if it cannot be decoded
        self._images[image_id] = img
        while len(self._images) > self.cache_size:
            self._images.popitem(last=False)
        return img

    def crop(self, ex: Exemplar) -> Image.Image:
        return self.image(ex.image).crop(tuple(ex.box))

    def crops(self, patches: list[Exemplar]) -> list[Image.Image]:
        return [self.crop(p) for p in patches]


# Exemplar pictures: what the viewer, the exports and the service show for a group.
PATCH_SIZE = 96
MOSAIC_COLUMNS = 4


def mosaic(images: list[Image.Image], size: int = PATCH_SIZE, columns: int = MOSAIC_COLUMNS, pad: int = 2) -> Image.Image:
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (columns * (size + pad) + pad, rows * (size + pad) + pad), (255, 255, 255))
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        sheet.paste(im.resize((size, size)), (pad + c * (size + pad), pad + r * (size + pad)))
    return sheet


def render_patches(circuit: Circuit, images_root: str | Path, out_dir: str | Path, size: int = PATCH_SIZE) -> int:
    """Write every group's exemplar PNGs and mosaic; return the number of PNGs written."""
    out_dir = Path(out_dir)
    loader = PatchLoader(circuit, Path(images_root), cache_size=64)
    count = 0
    for _, _, group in circuit.iter_groups():
        folder = out_dir / group.id
        folder.mkdir(parents=True, exist_ok=True)
        crops = []
        for k, ex in enumerate(group.exemplars):
            crop = loader.crop(ex).resize((size, size), Image.BILINEAR)
            crop.save(folder / f"{k}.png")
            crops.append(crop)
            count += 1
        if crops:
            mosaic(crops, size).save(folder / "mosaic.png")
            count += 1
    return count
