"""The circuit diff on the hand-made circuits (tests/atlas/handmade.py), changed by hand."""

from __future__ import annotations

import json

import msgspec
import pytest

from neurflow.atlas.diff import diff_circuits
from neurflow.core.circuit import Concept, Group, Member, Neuron
from neurflow.core.diff import CircuitDiff
from tests.atlas import handmade


def _after():
    """Class 0 after a fine-tune: a new important group {60, 61} ("logo") in mid, "eye" {10, 11} gone,
    "fur" {1, 2, 3, 4} now {1, 2, 3} and less important (neuron 1 lost its top importance)."""
    c = handmade.circuit(0)
    mid = c.layers[1]
    concept = Concept(id=0, activation=1.0, size=1, exemplars=[], patches=[], edges=[], vector=[])
    mid.neurons = [n for n in mid.neurons if n.id not in (4, 10, 11)]
    for n in mid.neurons:
        n.importance = 0.3
    mid.neurons += [Neuron(id=60, importance=1.0, concepts=[concept]), Neuron(id=61, importance=1.0, concepts=[concept])]
    mid.groups = [mid.groups[0], Group(id="l1g1", members=[Member(neuron=60, concept=0), Member(neuron=61, concept=0)],
                                       exemplars=[])]
    mid.groups[0].members = [m for m in mid.groups[0].members if m.neuron != 4]
    return [c, handmade.circuit(1)]


def test_what_appeared_vanished_and_shrank():
    diff = diff_circuits([handmade.circuit(0), handmade.circuit(1)], _after())
    assert diff.same_architecture
    changes = diff.classes[0].changes
    first = changes[0]
    assert (first.change, first.layer, first.after.neurons, first.before) == ("appeared", "mid", [60, 61], None)
    assert first.delta == pytest.approx(1.0)
    by = {(c.change, tuple((c.before or c.after).neurons)) for c in changes}
    assert ("vanished", (10, 11)) in by
    fur = next(c for c in changes if c.before and c.before.neurons == [1, 2, 3, 4])
    # before: (1.0 + 3 x 0.5) / 4 / 1.0 = 0.625; after: 0.3 / 1.0 (60 and 61 lead the layer) = 0.3
    assert fur.change == "shrank" and fur.after.neurons == [1, 2, 3] and fur.similarity == pytest.approx(0.75)
    assert fur.delta == pytest.approx(0.3 - 0.625)
    # class 1 did not change at all
    assert {c.change for c in diff.classes[1].changes} == {"kept"}
    assert CircuitDiff.from_json(diff.to_json()) == diff


def test_other_architectures_match_by_label():
    other = msgspec.structs.replace(handmade.MODEL, arch="other", weights_sha256="ef" * 32)
    diff = diff_circuits([handmade.circuit(0)], [handmade.circuit(0, other)])
    assert not diff.same_architecture
    assert all(c.change == "kept" and c.matched_by == "label" for c in diff.classes[0].changes)


def test_bad_input():
    with pytest.raises(ValueError, match="same classes"):
        diff_circuits([handmade.circuit(0)], [handmade.circuit(1)])
    with pytest.raises(ValueError, match=r"min_delta must lie in \[0, 1\]"):
        diff_circuits([handmade.circuit(0)], [handmade.circuit(0)], min_delta=-0.1)
    with pytest.raises(ValueError, match="appears twice"):
        diff_circuits([handmade.circuit(0), handmade.circuit(0)], [handmade.circuit(0)])
    with pytest.raises(ValueError, match="unsupported circuit diff schema"):
        CircuitDiff.from_json(json.dumps(msgspec.to_builtins(diff_circuits([handmade.circuit(0)], [handmade.circuit(0)]))
                                         | {"schema": "neurflow.diff/0"}))


def test_cli_diff_writes_the_document_and_the_side_by_side_page(tmp_path, capsys):
    from neurflow.cli import main

    paths = {}
    for side, circuits in (("before", [handmade.circuit(0)]), ("after", _after()[:1])):
        paths[side] = tmp_path / f"{side}.json"
        paths[side].write_text(circuits[0].to_json())
    assert main(["diff", "--before", str(paths["before"]), "--after", str(paths["after"]), "--out", str(tmp_path / "d")]) == 0
    diff = CircuitDiff.from_json((tmp_path / "d" / "diff.json").read_bytes())
    assert diff.classes[0].changes[0].change == "appeared"
    page = (tmp_path / "d" / "diff.html").read_text()
    assert "Biggest gain: l1g1 in mid appeared (+1.00)" in page and page.count("<table>") == 2
    assert "class 0: 3 changes: appeared l1g1 in mid (+1.00)" in capsys.readouterr().out
    assert main(["diff", "--before", str(paths["before"]), "--after", str(tmp_path / "none.json"), "--out",
                 str(tmp_path / "d")]) == 2


def test_a_regrouped_group_gained_only_what_its_neurons_gained():
    """The engine may regroup the same important neurons differently (a split, below min_similarity of
    any earlier group): that group is new as a group but gained little, while a group of neurons
    the first circuit did not use gained all its importance and comes first."""
    before = handmade.circuit(0)
    after = _after()[0]
    mid = after.layers[1]
    fur = mid.groups[0]  # {1, 2, 3}, regrouped as {1} alone
    mid.groups = [Group(id="l1g5", members=[m for m in fur.members if m.neuron == 1], exemplars=[]), mid.groups[1]]
    for n in mid.neurons:
        if n.id == 1:
            n.importance = 1.0
    diff = diff_circuits([before], [after], min_similarity=0.3)
    changes = diff.classes[0].changes
    split = next(c for c in changes if c.after and c.after.neurons == [1])
    assert split.change == "appeared"  # {1} vs {1, 2, 3, 4}: Jaccard 0.25
    # neuron 1 led its layer before (1.0) and does after (1.0): nothing gained
    assert split.delta == pytest.approx(0.0)
    assert changes[0].after.neurons == [60, 61] and changes[0].delta == pytest.approx(1.0)
