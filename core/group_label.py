"""How a group's label reads, the same for every consumer (API summaries, viewer, every export).

A group is in one of four states (:data:`~neurflow.core.circuit.GroupStatus`). A person's correction
wins over every automatic label; an uncertain group is shown as its two candidates, ``"A or B?"``, so a
reader never mistakes the labeler's hesitation for an answer; an unlabeled group has no label at all.
"""

from __future__ import annotations

from neurflow.core.circuit import Group

#: How an uncertain group's two candidates are shown (viewer, Label Studio's task header).
UNCERTAIN_FORMAT = "{} or {}?"


def top_text(group: Group) -> str | None:
    """The group's one label: a person's correction, else the labeler's best; ``None`` when unlabeled."""
    if group.correction is not None:
        return group.correction.text
    return group.labels[0].text if group.labels else None


def is_uncertain(group: Group) -> bool:
    return group.status == "uncertain"


def candidate_texts(group: Group) -> list[str]:
    """The two labels an uncertain group hesitates between, best first; empty for any other state.

    An uncertain group whose labeler recorded no candidates falls back on its two best labels."""
    if not is_uncertain(group):
        return []
    chosen = group.candidates or group.labels
    return list(dict.fromkeys(label.text for label in chosen))[:2]


def display_text(group: Group) -> str | None:
    """What a reader sees: ``"A or B?"`` for an uncertain group, else :func:`top_text`."""
    both = candidate_texts(group)
    if len(both) == 2:
        return UNCERTAIN_FORMAT.format(*both)
    top = top_text(group)
    return f"{top}?" if top is not None and is_uncertain(group) else top
