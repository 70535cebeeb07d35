"""Corrections as evidence: a corrected group's patches become an image-side prototype of its concept
that re-scores the other groups; the correction itself survives the relabel."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from neurflow.core.corrections import correct_group
from neurflow.labeler.labeling import label_circuit
from neurflow.labeler.prototypes import Prototypes, relabel_with_corrections
from neurflow.world.circuits import world_circuit


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_mixing_moves_only_prototyped_concepts_and_stays_among_the_texts():
    texts = _unit([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    # every patch lies near one corner of the space, far from every text (the modality gap) ...
    reference = _unit([[0.1, 0.0, 0.0, 1.0], [0.0, 0.1, 0.0, 1.0], [0.0, 0.0, 0.1, 1.0], [0.0, 0.0, 0.0, 1.0]])
    # ... and the corrected group's patches stand out from the rest along the first axis
    group = _unit([[0.3, 0.0, 0.0, 1.0], [0.35, 0.0, 0.02, 1.0]])
    prototypes = Prototypes()
    prototypes.add_images(reference)
    assert not prototypes and np.array_equal(prototypes.mixed(["a", "b", "c"], texts), texts)
    prototypes.add_group("b", group)  # a person named them "b"
    assert prototypes.groups == {"b": 1}
    mixed = prototypes.mixed(["a", "b", "c"], texts, weight=0.5)
    assert np.array_equal(mixed[[0, 2]], texts[[0, 2]])  # the other concepts are untouched
    assert np.allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-6)
    corner = _unit(reference.mean(axis=0))
    assert mixed[1] @ texts[0] > 0.3 and abs(mixed[1] @ corner) < 0.1  # towards what the patches show, among the texts
    text_mean = texts.mean(axis=0)
    radius = np.linalg.norm(texts - text_mean, axis=1).mean()
    carried = _unit(text_mean + radius * _unit(_unit(group.mean(0)) - reference.mean(0)))
    assert np.allclose(prototypes.mixed(["a", "b", "c"], texts, weight=1.0)[1], carried, atol=1e-6)
    assert np.array_equal(prototypes.mixed(["a", "b", "c"], texts, weight=0.0), texts)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        prototypes.mixed(["a", "b", "c"], texts, weight=1.5)


@pytest.fixture(scope="module")
def circuits(world_clip):
    """Two circuits of the standard world that share a part (classes 0 and 1: the red circle), labeled."""
    out = []
    for c in (0, 1):
        circuit, expected = world_circuit(world_clip.world, c, n_images=6, split="heldout")
        out.append((label_circuit(circuit, world_clip.heldout_images, world_clip.labeling()), expected))
    return out


def test_a_correction_names_the_same_part_in_other_groups(circuits, world_clip):
    """A concept the CLIP cannot read from its name ("tomato": the world CLIP never saw the word) is
    found by its prototype: once a person names one group's part so, the other circuit's groups of
    that part take the name, and the groups of other parts keep theirs."""
    (first, expected_first), (second, expected_second) = circuits
    first = copy.deepcopy(first)  # the fixture's circuits stay uncorrected
    shared = sorted({p for p in expected_first.values() if p} & {p for p in expected_second.values() if p})
    assert shared, "classes 0 and 1 share a part"
    part = shared[0]
    gid = next(g for g, p in expected_first.items() if p == part)
    correct_group(first, gid, "tomato", key="k-test", via="python")

    config = world_clip.labeling()
    again_first, again_second = relabel_with_corrections([(first, world_clip.heldout_images),
                                                          (second, world_clip.heldout_images)], config)
    assert again_first.labeling.prototypes == again_second.labeling.prototypes == {"tomato": 1}
    assert again_second.labeling.vocabulary.size == first.labeling.vocabulary.size + 1  # "tomato" joined it
    _, fixed = again_first.group(gid)
    assert fixed.status == "corrected" and fixed.labels[0].text == "tomato" and fixed.correction.key == "k-test"
    same = [g for g in again_second.iter_groups() if expected_second[g[2].id] == part]
    assert same and all(g.labels[0].text == "tomato" for _, _, g in same)
    others = [(g, expected_second[g.id]) for _, _, g in again_second.iter_groups() if expected_second[g.id] not in (part, None)]
    before = {g.id: g.labels[0].text for _, _, g in second.iter_groups()}
    assert others and all(g.labels[0].text == before[g.id] for g, _ in others)


def test_without_corrections_the_labels_do_not_change(circuits, world_clip):
    (first, _), _ = circuits
    clean = [(g.id, [lab.text for lab in g.labels], g.confidence) for _, _, g in first.iter_groups()]
    assert all(g.correction is None for _, _, g in first.iter_groups())
    (again,) = relabel_with_corrections([(first, world_clip.heldout_images)], world_clip.labeling())
    assert [(g.id, [lab.text for lab in g.labels], g.confidence) for _, _, g in again.iter_groups()] == clean
    assert again.labeling.prototypes == {}
