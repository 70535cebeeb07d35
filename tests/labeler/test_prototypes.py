"""Corrections as evidence: how a corrected group's prototype is mixed into its concept's embedding.
(The relabel path end to end: tests/service/http/test_corrections.py; what it buys: the corrections
section of the bench, docs/label-quality.md.)"""

from __future__ import annotations

import numpy as np
import pytest

from neurflow.labeler.prototypes import Prototypes


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
