"""When a group's label counts as uncertain.

``Group.confidence`` is the labeler's confidence in ``labels[0]``. Below ``UNCERTAIN_BELOW`` the label
is shown as uncertain (the viewer marks the group; exports carry the lower score, so annotators who
sort by score review those first); the labeler then sets ``Group.status`` to ``uncertain``. The
threshold belongs to the combination that produces the confidence (``neurflow.labeler.evidence``);
how it was chosen is in docs/label-quality.md. A group that was never labeled is neither certain nor
uncertain.
"""

from __future__ import annotations

from neurflow.core.circuit import Group
from neurflow.labeler.evidence import UNCERTAIN_BELOW, is_uncertain_probability


def is_uncertain(group: Group, threshold: float | None = None) -> bool:
    if threshold is None:
        return bool(group.labels) and is_uncertain_probability(group.confidence)
    return bool(group.labels) and group.confidence is not None and group.confidence < threshold


__all__ = ["UNCERTAIN_BELOW", "is_uncertain"]
