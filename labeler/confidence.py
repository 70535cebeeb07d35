"""When a group's label counts as uncertain.

``Group.confidence`` is the labeler's confidence in ``labels[0]``. Below ``UNCERTAIN_BELOW`` the label
is shown as uncertain (the viewer marks the group; exports carry the lower score, so annotators who
sort by score review those first). The threshold and how it was chosen are documented in
docs/label-quality.md; a group that was never labeled is neither certain nor uncertain.
"""

from __future__ import annotations

from neurflow.core.circuit import Group

UNCERTAIN_BELOW = 0.5


def is_uncertain(group: Group, threshold: float = UNCERTAIN_BELOW) -> bool:
    return bool(group.labels) and group.confidence is not None and group.confidence < threshold


__all__ = ["UNCERTAIN_BELOW", "is_uncertain"]
