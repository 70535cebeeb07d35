"""How a group's label reads in each state, and how a person's correction is applied and survives a
labeling run that rewrites the labels."""

from __future__ import annotations

import re

import pytest

from neurflow.core.circuit import Circuit, Group, Label, Member
from neurflow.core.corrections import correct_group, corrections, reapply
from neurflow.core.group_label import candidate_texts, display_text, is_uncertain, top_text
from tests.viewer.big_circuit import big_circuit


def _group(**kw) -> Group:
    return Group(id="l1g0", members=[Member(0, 0)], exemplars=[], **kw)


def test_each_state_reads_as_it_should():
    unlabeled = _group()
    assert unlabeled.status == "unlabeled" and top_text(unlabeled) is None and display_text(unlabeled) is None

    labeled = _group(labels=[Label("wheel", 2.0, "clip"), Label("door", 1.0, "clip")], confidence=0.9)
    assert labeled.status == "labeled"  # a labeled group without a status reads as labeled
    assert display_text(labeled) == "wheel" and candidate_texts(labeled) == [] and not is_uncertain(labeled)

    unsure = _group(labels=[Label("wheel", 2.0, "clip"), Label("door", 1.9, "clip"), Label("sky", 0.1, "clip")],
                    status="uncertain", candidates=[Label("door", 1.9, "clip"), Label("wheel", 2.0, "clip")])
    assert is_uncertain(unsure) and candidate_texts(unsure) == ["door", "wheel"]  # the labeler's order
    assert display_text(unsure) == "door or wheel?" and top_text(unsure) == "wheel"

    no_candidates = _group(labels=[Label("wheel", 2.0, "clip"), Label("door", 1.9, "clip")], status="uncertain")
    assert display_text(no_candidates) == "wheel or door?"  # falls back on the two best labels
    one_label = _group(labels=[Label("wheel", 2.0, "clip")], status="uncertain")
    assert display_text(one_label) == "wheel?"


def test_a_correction_wins_and_records_its_provenance():
    circuit = big_circuit((1, 3), 4)
    _, group = circuit.group("l1g1")
    group.status, group.candidates = "uncertain", list(group.labels[:2])
    before = group.labels[0].text
    made = correct_group(circuit, "l1g1", "  steering   wheel ", key="k-0123", via="api")
    assert made.text == "steering wheel" and made.by == "human" and made.key == "k-0123" and made.via == "api"
    assert made.previous == before and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", made.at)
    assert group.status == "corrected" and group.correction == made and group.candidates == []
    assert group.labels[0] == Label("steering wheel", 1.0, "human") and group.confidence is None
    assert [lab.text for lab in group.labels[1:]] == ["part 1", "other"]  # the automatic labels stay, below
    assert top_text(group) == display_text(group) == "steering wheel"

    # a second correction replaces the first; "previous" still names the automatic label
    again = correct_group(circuit, "l1g1", "other", via="python")
    assert again.previous == before and [lab.text for lab in group.labels] == ["other", "part 1"]
    assert corrections(circuit) == {"l1g1": again}
    # the document round-trips with its correction
    assert Circuit.from_json(circuit.to_json()).group("l1g1")[1].correction == again


@pytest.mark.parametrize("text, message", [("", "cannot be empty"), ("   ", "cannot be empty"),
                                           ("x" * 201, "at most 200 characters"), (3, "is text, got int")])
def test_bad_corrections_are_refused_clearly(text, message):
    circuit = big_circuit((1, 2), 2)
    with pytest.raises(ValueError, match=message):
        correct_group(circuit, "l1g0", text)
    with pytest.raises(ValueError, match="comes via one of"):
        correct_group(circuit, "l1g0", "wheel", via="email")
    with pytest.raises(KeyError, match="no group 'l9g9'"):
        correct_group(circuit, "l9g9", "wheel")
    assert corrections(circuit) == {}


def test_reapply_puts_corrections_back_after_a_relabel():
    circuit = big_circuit((1, 3), 4)
    correct_group(circuit, "l1g2", "hubcap", key="k-1")
    _, group = circuit.group("l1g2")
    # what a labeling run does: new automatic labels, status and confidence on every group
    for _, _, g in circuit.iter_groups():
        g.labels = [Label("tyre", 3.0, "clip"), Label("hubcap", 2.0, "clip")]
        g.status, g.confidence, g.candidates = "uncertain", 0.3, [Label("tyre", 3.0, "clip"), Label("hubcap", 2.0, "clip")]
    reapply(circuit)
    assert group.status == "corrected" and group.confidence is None and group.candidates == []
    assert [(lab.text, lab.source) for lab in group.labels] == [("hubcap", "human"), ("tyre", "clip")]
    assert group.correction.key == "k-1" and group.correction.previous == "tyre"  # what it overrules now
    others = [g for _, _, g in circuit.iter_groups() if g.id != "l1g2"]
    assert all(g.status == "uncertain" and g.correction is None for g in others)
