"""Corrections as evidence: a person's label turns the corrected group's patches into an image-side
prototype of that concept, mixed into the concept's text embedding, and every group of the model's
circuits is scored again with the mixed vocabulary (few-shot labeling from the corrections).

CLIP's image and text embeddings lie in separate regions of its space (the *modality gap*: a patch is
closer to any other patch than to any text), so a raw mean of patch embeddings mixed into a text
embedding would pull every patch to the corrected concepts. The prototype is first carried into the
text region: its direction away from the mean image embedding (``mean(images)``: the reference pools
of the circuits the corrections came from) is placed at the texts' typical distance from their own
mean, ``p' = normalise(mean(texts) + r * normalise(p - mean(images)))``, ``r`` the mean distance of
the vocabulary's embeddings from ``mean(texts)`` (a plain shift by the difference of the two means
would leave a prototype near the image mean near the text mean: a concept close to every patch).
Then ``t' = normalise((1 - w) * t + w * p')`` with ``w = PROTOTYPE_WEIGHT``, chosen on the dev worlds
and reported on held-out ones (``python -m bench.run corrections``, docs/label-quality.md). A
corrected concept that the vocabulary lacks joins it (its text embedding mixed the same way).

The scoring itself is untouched: :func:`relabel_with_corrections` hands
:func:`~neurflow.labeler.labeling.label_circuit` a CLIP whose vocabulary matrix carries the prototypes
(:class:`PrototypeClip`), so whatever score and confidence the labeler uses, it uses them with the
corrections folded in. The corrections themselves
stay on top (``label_circuit`` reapplies them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from neurflow.core.circuit import Circuit
from neurflow.labeler.clip_model import ClipModel, load_clip
from neurflow.labeler.config import LabelerConfig
from neurflow.labeler.labeling import PatchEmbedder, label_circuit
from neurflow.labeler.patches import PatchLoader, group_patches, reference_pool
from neurflow.labeler.vocabulary import Vocabulary, load_vocabulary
from neurflow.progress import Progress

#: Weight of the image-side prototype in a corrected concept's embedding (the text keeps 1 - w). Of
#: 0.25, 0.5 and 0.75, the best mean top-1 of the groups not corrected over the dev worlds' rows, with
#: both a shorter-trained and a noisy (q80) CLIP (docs/label-quality.md#corrections).
PROTOTYPE_WEIGHT = 0.5


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass
class Prototypes:
    """Image-side prototypes of corrected concepts: per concept the mean of its corrected groups'
    patch means (unit vectors), and the mean image embedding of the runs they came from."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)  # concept -> corrected groups behind its prototype
    _image_sum: np.ndarray | None = None
    _images: int = 0

    def add_group(self, text: str, patches: np.ndarray) -> None:
        if len(patches) == 0:
            return
        mean = _unit(patches.mean(axis=0))
        self.sums[text] = self.sums.get(text, 0) + mean
        self.groups[text] = self.groups.get(text, 0) + 1

    def add_images(self, embeddings: np.ndarray) -> None:
        if len(embeddings):
            total = embeddings.sum(axis=0)
            self._image_sum = total if self._image_sum is None else self._image_sum + total
            self._images += len(embeddings)

    def __bool__(self) -> bool:
        return bool(self.sums)

    def mixed(self, texts: Sequence[str], text_matrix: np.ndarray, weight: float = PROTOTYPE_WEIGHT) -> np.ndarray:
        """``text_matrix`` (one unit row per text) with each prototyped text's row mixed with its
        prototype carried into the text region (see the module's docstring); other rows unchanged."""
        if not 0 <= weight <= 1:
            raise ValueError(f"the prototype weight is in [0, 1], got {weight}")
        out = np.array(text_matrix, dtype=np.float32, copy=True)
        if not self or self._image_sum is None:
            return out
        image_mean, text_mean = self._image_sum / self._images, text_matrix.mean(axis=0)
        radius = float(np.linalg.norm(text_matrix - text_mean, axis=1).mean())
        for i, text in enumerate(texts):
            if text in self.sums:
                prototype = _unit(text_mean + radius * _unit(_unit(self.sums[text]) - image_mean))
                out[i] = _unit((1 - weight) * text_matrix[i] + weight * prototype)
        return out


class PrototypeClip:
    """A loaded CLIP whose vocabulary embeddings carry the prototypes; everything else is the model's."""

    def __init__(self, clip: ClipModel, prototypes: Prototypes, weight: float = PROTOTYPE_WEIGHT) -> None:
        self._clip = clip
        self.prototypes = prototypes
        self.weight = weight

    def __getattr__(self, name: str):
        return getattr(self._clip, name)

    def vocabulary_matrix(self, vocabulary: Vocabulary, templates: Sequence[str]) -> np.ndarray:
        return self.prototypes.mixed(vocabulary.concepts, self._clip.vocabulary_matrix(vocabulary, templates), self.weight)


def collect_prototypes(circuits: Sequence[tuple[Circuit, Path]], clip: ClipModel, config: LabelerConfig) -> Prototypes:
    """The prototypes of every corrected group of ``circuits`` (each with the data root of its image
    paths), embedded with ``clip``: each group's labeling patches (display exemplars first, at most
    ``max_patches``), and each circuit's reference pool for the modality gap."""
    prototypes = Prototypes()
    for circuit, root in circuits:
        corrected = [(i, g) for i, _, g in circuit.iter_groups() if g.correction is not None]
        if not corrected:
            continue
        embed = PatchEmbedder(clip, PatchLoader(circuit, Path(root)), config.batch_size)
        prototypes.add_images(embed(reference_pool(circuit, config.reference_size, config.seed)))
        for layer_index, group in corrected:
            patches = group_patches(circuit, layer_index, group)[: config.max_patches]
            prototypes.add_group(group.correction.text, embed(patches))
    return prototypes


def relabel_with_corrections(circuits: Sequence[tuple[Circuit, Path]], config: LabelerConfig | dict, *,
                             evidence: Sequence[tuple[Circuit, Path]] = (), clip: ClipModel | None = None,
                             weight: float = PROTOTYPE_WEIGHT, progress: Progress | None = None) -> list[Circuit]:
    """Label ``circuits`` again with the corrections of all of them, and of ``evidence``, as evidence.

    Each circuit comes with the data root of its image paths; ``evidence`` are further circuits of the
    same model whose corrections count but which are not relabeled. The corrected concepts'
    prototypes come from both; each of ``circuits`` is relabeled (copies are returned, in order) with
    the vocabulary extended by corrected concepts it lacks. ``circuit.labeling.prototypes`` records
    which concepts carried a prototype and from how many groups."""
    config = config if isinstance(config, LabelerConfig) else LabelerConfig.from_spec(config)
    clip = clip or load_clip(config.clip)
    prototypes = collect_prototypes([*circuits, *evidence], clip, config)
    vocabulary = load_vocabulary(config.vocabulary)
    known = {c.lower() for c in vocabulary.concepts}
    new = [t for t in prototypes.sums if t.lower() not in known]
    if new:  # a person named a concept the vocabulary lacks: it joins the vocabulary
        config = msgspec.structs.replace(config, vocabulary=[*vocabulary.concepts, *new])
    scorer = PrototypeClip(clip, prototypes, weight) if prototypes else clip
    out = []
    for circuit, root in circuits:
        labeled = label_circuit(circuit, root, config, progress, clip=scorer)
        labeled.labeling.prototypes = dict(prototypes.groups)
        out.append(labeled)
    return out
