"""A person's correction of a group's label: how it is applied, and how it survives relabeling.

A correction is stored in ``Group.correction`` (:class:`~neurflow.core.circuit.Correction`: the text,
``human``, the API key's id or the Label Studio user, the time, the channel, and the automatic label
it replaced). Applying it makes the corrected text ``labels[0]`` (``source="human"``, score 1), so
every reader of the top label sees it, sets ``status = "corrected"``, drops the candidates and the
labeler's confidence (a person's label is not a calibrated estimate of the labeler's). Every labeling
run ends with :func:`reapply`, so a correction survives ``neurflow label``, the service's relabel
and any later labeling of the same circuit.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from neurflow.core.circuit import Circuit, Correction, Group, Label

MAX_TEXT = 200
VIAS = ("api", "labelstudio", "python")
HUMAN_SOURCE = "human"


def clean_text(text: object) -> str:
    """The corrected label, whitespace collapsed; ``ValueError`` saying what is accepted otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a corrected label is text, got {type(text).__name__}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ValueError("a corrected label cannot be empty; give the concept's name, e.g. \"red disc\"")
    if len(cleaned) > MAX_TEXT:
        raise ValueError(f"a corrected label has at most {MAX_TEXT} characters, got {len(cleaned)}")
    return cleaned


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _apply(group: Group, correction: Correction) -> None:
    automatic = [lab for lab in group.labels if lab.source != HUMAN_SOURCE and lab.text != correction.text]
    group.labels = [Label(text=correction.text, score=1.0, source=HUMAN_SOURCE), *automatic]
    group.correction = correction
    group.status = "corrected"
    group.candidates = []
    group.confidence = None


def correct_group(circuit: Circuit, group_id: str, text: object, *, key: str | None = None, via: str = "python",
                  at: str | None = None) -> Correction:
    """Set a person's label on one group of ``circuit`` (in place) and return the stored correction.

    ``KeyError`` for an unknown group, ``ValueError`` for a label or channel that is not accepted."""
    if via not in VIAS:
        raise ValueError(f"a correction comes via one of {VIAS}, got {via!r}")
    cleaned = clean_text(text)
    _, group = circuit.group(group_id)
    if group.correction is not None:
        previous = group.correction.previous  # the automatic label stays the one first replaced
    else:
        previous = group.labels[0].text if group.labels else None
    correction = Correction(text=cleaned, key=key, at=at or now_iso(), via=via, previous=previous)
    _apply(group, correction)
    return correction


def reapply(circuit: Circuit) -> Circuit:
    """Put every stored correction back on top after a labeling run rewrote the labels (in place).

    ``previous`` becomes the new automatic label, so the record says what the person overrules now."""
    for _, _, group in circuit.iter_groups():
        if group.correction is None:
            continue
        automatic = next((lab.text for lab in group.labels if lab.source != HUMAN_SOURCE), None)
        correction = group.correction
        if automatic is not None:
            correction = msgspec.structs.replace(correction, previous=automatic)
        _apply(group, correction)
    return circuit


def corrections(circuit: Circuit) -> dict[str, Correction]:
    """Group id -> correction, for every corrected group."""
    return {g.id: g.correction for _, _, g in circuit.iter_groups() if g.correction is not None}
