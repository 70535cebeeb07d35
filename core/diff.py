"""The circuit diff document (``neurflow.diff/1``): what changed between two checkpoints' circuits.

Two checkpoints of one model (a fine-tune, a second run) explained on the same classes and images:
each class's groups are matched across the two circuits, then each group either persisted (and
grew, shrank or kept its importance), appeared, or vanished. Computed by :mod:`neurflow.atlas.diff`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from .documents import Document

SCHEMA_VERSION = "neurflow.diff/1"

Change = Literal["appeared", "vanished", "grew", "shrank", "kept"]


class GroupSide(msgspec.Struct, forbid_unknown_fields=True):
    """A group as it is in one of the two circuits."""

    group: str
    neurons: list[int]
    importance: float  # 0..1, mean member importance over the layer's most important neuron
    label: str | None = None


class GroupChange(msgspec.Struct, forbid_unknown_fields=True):
    layer: str
    change: Change
    before: GroupSide | None  # None: appeared
    after: GroupSide | None  # None: vanished
    # importance after - importance before; for an unmatched group of the same architecture, the
    # importance its member neurons have on the other side stands for the missing side (else 0)
    delta: float
    matched_by: Literal["neurons", "label", "none"] = "none"
    similarity: float = 0.0  # Jaccard of the neuron sets, or 1.0 for an equal label


class ClassDiff(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    name: str | None
    changes: list[GroupChange]  # the biggest gains first (appeared and grew), then the rest by |delta|


class CircuitDiff(Document, forbid_unknown_fields=True):
    schema: str
    before: str  # the weights' sha256 (or the run's name) of each side
    after: str
    same_architecture: bool  # neuron ids mean the same channels on both sides
    min_similarity: float
    min_delta: float
    classes: list[ClassDiff]

    SCHEMA: ClassVar[str] = SCHEMA_VERSION
    KIND: ClassVar[str] = "circuit diff"
