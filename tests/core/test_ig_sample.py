"""IG on a concept-stratified sample of each neuron's top patches (``ig_patches``)."""

from __future__ import annotations

import numpy as np

from neurflow.core.engine import NeurFlow, concept_sample, sample_weights


def test_without_a_budget_every_top_patch_is_used():
    labels = np.array([0, 1, 0, 2, 1])
    assert concept_sample(labels, None).tolist() == [0, 1, 2, 3, 4]
    assert concept_sample(labels, 5).tolist() == [0, 1, 2, 3, 4]
    assert concept_sample(labels, 50).tolist() == [0, 1, 2, 3, 4]


def test_the_sample_follows_the_concept_sizes_and_spreads_over_each_concept():
    labels = np.repeat([0, 1, 2], [30, 15, 5])  # activation order: concept 0's patches are the strongest
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(50)]
    sample = concept_sample(labels, 10)
    assert np.all(np.diff(sample) > 0)
    assert [int((labels[sample] == k).sum()) for k in range(3)] == [6, 3, 1]
    rows0 = np.nonzero(labels == 0)[0]
    positions = np.searchsorted(rows0, sample[labels[sample] == 0])
    assert positions.min() < 5 and positions.max() > 25  # not just the concept's strongest patches
    # A concept too small for its share still gets one row, so every concept has IG scores.
    tiny = np.array([0] * 49 + [1])
    assert (tiny[concept_sample(tiny, 10)] == 1).sum() == 1


def test_sample_weights_give_the_mean_over_all_rows_of_a_per_concept_quantity():
    labels = np.repeat([0, 1, 2], [30, 15, 5])
    sample = concept_sample(labels, 10)
    w = sample_weights(labels, sample)
    assert np.isclose(w.sum(), 1.0)
    value = np.array([1.0, 4.0, 10.0])[labels]  # the same within a concept
    assert np.isclose(w @ value[sample], value.mean())


def test_a_budget_runs_fewer_ig_pairs_and_every_concept_keeps_its_edges(tiny_resnet, random_images):
    layers = ["fc", "layer4.1", "layer4.0"]
    totals = {}

    def progress(event):
        if event.stage.startswith("ig"):
            totals[event.stage] = event.total

    def fit(**kw):
        totals.clear()
        c = NeurFlow(layers, tau=3, top_n=20, ig_steps=4, select="all", progress=progress, **kw).fit(
            tiny_resnet, random_images, 1).circuit_
        return c, dict(totals)

    full, full_pairs = fit()
    sampled, sampled_pairs = fit(ig_patches=6)
    assert full_pairs["ig fc"] == 20 and sampled_pairs["ig fc"] <= 6 + 5  # one neuron: 20 pairs vs about 6
    assert sampled_pairs["ig layer4.1"] < full_pairs["ig layer4.1"]
    for layer in sampled.layers[:-1]:
        for neuron in layer.neurons:
            for concept in neuron.concepts:
                assert len(concept.edges) == 3 and np.isclose(sum(abs(e.weight) for e in concept.edges), 1.0)
    assert sampled.params.ig_patches == 6 and full.params.ig_patches is None
