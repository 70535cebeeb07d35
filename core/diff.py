"""The circuit diff document (``neurflow.diff/3``): what changed between two checkpoints' circuits.

Two checkpoints of one model (a fine-tune, a second run) explained on the same classes and images:
each class's groups are matched across the two circuits, then each group either persisted (and
grew, shrank or kept its importance), appeared, or vanished. Computed by :mod:`neurflow.atlas.diff`.

Version 2 adds the off-class reliance (:class:`OffClassReliance`): with both networks at hand, how
much more the second one relies on a group's neurons for the class on images that do not show the
class, and ``order``, which of the two rankings a class's changes follow. Version 3 changes what
``increase`` means: version 2 stored drop_after - drop_before, so a group the first network used to
*inhibit* the class (a negative drop) and the second ignores counted as a big new reliance; version 3
clips both drops at 0 (:func:`reliance_increase`). A version 2 document is read with its increase
recomputed from the drops it kept (rounded to 4 decimals, so the last decimal may differ from one made
today) and, when ordered by reliance, its changes reordered by it; a version 1 document reads as one
without reliance, ordered by importance.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from .documents import Document

SCHEMA_VERSION = "neurflow.diff/3"

Change = Literal["appeared", "vanished", "grew", "shrank", "kept"]
#: how each class's changes are ordered: by the importance they gained (from the circuits alone), or
#: by the increase of the off-class reliance (needs both networks and images)
Order = Literal["importance", "off_class_reliance"]


class GroupSide(msgspec.Struct, forbid_unknown_fields=True):
    """A group as it is in one of the two circuits."""

    group: str
    neurons: list[int]
    importance: float  # 0..1, mean member importance over the layer's most important neuron
    label: str | None = None


class OffClassReliance(msgspec.Struct, forbid_unknown_fields=True):
    """The group's neurons zeroed in both networks (one architecture: a neuron id is the same channel)
    on the class's off-class images: the mean drop of the class's logit in each."""

    images: int  # off-class images measured (the same ones in both networks)
    drop_before: float  # in the first network
    drop_after: float  # in the second
    # max(drop_after, 0) - max(drop_before, 0) (reliance_increase): how much more the second network relies
    # on these neurons to raise the class there; in neurflow.diff/2, drop_after - drop_before
    increase: float


def reliance_increase(drop_before: float, drop_after: float) -> float:
    """How much more the second network relies on a group's neurons to raise the class off-class.

    A negative drop means zeroing the neurons *raised* the class's logit: they inhibited the class. That
    is no reliance on them, so each side counts as at least 0; otherwise a group the first network used
    to inhibit the class, and the second ignores, outranks the shortcut's group by the inhibition it
    lost (the planted world ``objects-tint-texture``, docs/audit.md)."""
    return max(drop_after, 0.0) - max(drop_before, 0.0)


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
    # measured on the second side's neurons (the first side's for a vanished group); None: not measured
    reliance: OffClassReliance | None = None


class ClassDiff(msgspec.Struct, forbid_unknown_fields=True):
    class_index: int
    name: str | None
    changes: list[GroupChange]  # in CircuitDiff.order, biggest first


class CircuitDiff(Document, forbid_unknown_fields=True):
    schema: str
    before: str  # the weights' sha256 (or the run's name) of each side
    after: str
    same_architecture: bool  # neuron ids mean the same channels on both sides
    min_similarity: float
    min_delta: float
    classes: list[ClassDiff]
    order: Order = "importance"
    max_images: int | None = None  # the cap on off-class images per class, when the reliance was measured
    warnings: list[str] = []

    SCHEMA: ClassVar[str] = SCHEMA_VERSION
    OLDER: ClassVar[tuple[str, ...]] = ("neurflow.diff/1", "neurflow.diff/2")
    KIND: ClassVar[str] = "circuit diff"

    @classmethod
    def _upgrade(cls, head: dict[str, Any], version: str) -> dict[str, Any]:
        if version == "neurflow.diff/1":
            # version 1 had no reliance and always ordered by importance: its fields read unchanged
            return head | {"schema": SCHEMA_VERSION, "order": "importance"}
        # version 2 kept both raw drops, so its increase is recomputed rather than read with the old meaning
        diff = msgspec.convert(head | {"schema": SCHEMA_VERSION}, cls)
        for cls_diff in diff.classes:
            for change in cls_diff.changes:
                if change.reliance is not None:
                    r = change.reliance
                    r.increase = round(reliance_increase(r.drop_before, r.drop_after), 4)
            if diff.order == "off_class_reliance":
                order_by_reliance(cls_diff.changes)
        return msgspec.to_builtins(diff)


def order_by_reliance(changes: list[GroupChange]) -> None:
    """Sort measured changes by their increase, biggest first (ties by the importance gained), the second
    circuit's groups before the vanished ones: a vanished group is no group of the second network, and on
    the planted worlds one that overlaps the shortcut's group can edge it out (docs/audit.md)."""
    changes.sort(key=lambda c: (c.after is None, -c.reliance.increase, -c.delta))
