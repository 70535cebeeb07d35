"""The estimator end to end on built models: planted wiring, concepts, determinism, the document."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import numpy as np
import pytest
import torch

from neurflow.cli.engine import schema_text
from neurflow.core.circuit import Circuit
from neurflow.core.engine import NeurFlow

SCHEMAS = Path(__file__).resolve().parents[2] / "core" / "schemas"


def fit_planted(planted, images, **kw):
    params = dict(tau=2, top_n=8, granularities=(1.0, 0.5), select="all", ig_steps=16)
    params.update(kw)
    return NeurFlow(["fc", "up", "low"], **params).fit(planted, images, 0).circuit_


def test_planted_wiring_is_recovered(planted, colour_images):
    circuit = fit_planted(planted, colour_images)
    top, up, low = circuit.layers
    assert [n.id for n in top.neurons] == [0]
    # The class-0 logit reads up channels 0 and 1 (weights 1.0 and 0.8).
    assert {e.neuron for c in top.neurons[0].concepts for e in c.edges} == {0, 1}
    assert sorted(n.id for n in up.neurons) == [0, 1]
    for neuron in up.neurons:
        planted_set = set(planted.PLANTED[neuron.id])
        for concept in neuron.concepts:
            assert {e.neuron for e in concept.edges} == planted_set
    assert low.neurons == [] and low.groups == []


def test_tau_larger_than_planted_set_ranks_planted_first(planted, colour_images):
    circuit = fit_planted(planted, colour_images, tau=4)
    for neuron in circuit.layers[1].neurons:
        for concept in neuron.concepts:
            first_two = [e.neuron for e in concept.edges[:2]]
            assert set(first_two) == set(planted.PLANTED[neuron.id])
            assert all(abs(e.weight) < 1e-6 for e in concept.edges[2:])  # unwired channels get no credit


def test_l1_edges_sum_to_one_and_reference_compat_does_not(planted, colour_images):
    fixed = fit_planted(planted, colour_images)
    quirky = fit_planted(planted, colour_images, reference_compat=True)
    for layer in fixed.layers[:-1]:
        for n in layer.neurons:
            for c in n.concepts:
                assert sum(abs(e.weight) for e in c.edges) == pytest.approx(1.0, abs=1e-5)
    sums = [sum(abs(e.weight) for e in c.edges) for n in quirky.layers[1].neurons for c in n.concepts]
    assert all(s > 0 for s in sums) and max(abs(s - 1.0) for s in sums) > 1e-3
    assert quirky.params.reference_compat and not fixed.params.reference_compat


def test_planted_concepts_split_into_families(planted):
    """Up neuron 0 reads R (low 0) and G (low 1): red and green patches are two concepts."""
    rng = np.random.default_rng(0)
    images = []
    for k in range(10):
        img = np.zeros((3, 8, 8))
        img[k % 2] = rng.uniform(0.6, 1.0)  # pure red or pure green
        images.append(img)
    x = torch.tensor(np.stack(images), dtype=torch.float32)
    circuit = NeurFlow(["up", "low"], tau=2, top_n=10, granularities=(1.0,), select="all", ig_steps=8).fit(planted, x, 0).circuit_
    neuron = circuit.layers[0].neurons[0]
    assert len(neuron.concepts) == 2
    families = [{e.image % 2 for e in c.patches} for c in neuron.concepts]
    assert sorted(map(sorted, families)) == [[0], [1]]
    assert sorted(c.size for c in neuron.concepts) == [5, 5]


def test_single_concept_allowed_when_no_structure(planted):
    torch.manual_seed(0)
    x = torch.full((40, 3, 8, 8), 0.5) + 0.05 * torch.randn(40, 3, 1, 1)  # one isotropic blob of colours
    kw = dict(tau=2, top_n=40, granularities=(1.0,), select="all", ig_steps=4)
    one = NeurFlow(["up", "low"], allow_single_concept=True, **kw).fit(planted, x, 0).circuit_
    ref = NeurFlow(["up", "low"], allow_single_concept=True, reference_compat=True, **kw).fit(planted, x, 0).circuit_
    assert len(one.layers[0].neurons[0].concepts) == 1
    assert len(ref.layers[0].neurons[0].concepts) >= 2  # the reference never has one concept


def test_pruning_keeps_the_planted_prefix(planted, colour_images):
    circuit = fit_planted(planted, colour_images, tau=4, acceptable_error_range=0.05)
    for neuron in circuit.layers[1].neurons:
        kept = {e.neuron for e in neuron.concepts[0].edges}
        assert kept == set(planted.PLANTED[neuron.id])


def test_groups_and_edges_are_consistent(tiny_resnet, random_images):
    circuit = NeurFlow(["fc", "layer4.1", "layer4.0", "layer3.1"], tau=3, top_n=12, ig_steps=4,
                       select="all").fit(tiny_resnet, random_images, 1).circuit_
    for layer in circuit.layers[:-1]:
        members = sorted((m.neuron, m.concept) for g in layer.groups for m in g.members)
        concepts = sorted((n.id, c.id) for n in layer.neurons for c in n.concepts)
        assert members == concepts  # every concept in exactly one group
        for g in layer.groups:
            assert 1 <= len(g.exemplars) <= 5
    ids = {g.id for _, _, g in circuit.iter_groups()}
    assert all(e.source in ids and e.target in ids for e in circuit.group_edges)
    assert circuit.fit.n_patches == 6 * (1 + 9 + 49)


def test_same_seed_gives_byte_identical_json(tiny_resnet, random_images):
    kw = dict(tau=3, top_n=10, ig_steps=4, select="all", seed=3)
    a = NeurFlow(["fc", "layer4.1", "layer4.0"], **kw).fit(tiny_resnet, random_images, 2).circuit_
    b = NeurFlow(["fc", "layer4.1", "layer4.0"], **kw).fit(tiny_resnet, random_images, 2).circuit_
    a.timings, b.timings = {}, {}  # wall-clock times are the only field allowed to differ
    assert a.to_json() == b.to_json()


def test_json_round_trip_and_committed_schemas(tiny_resnet, random_images):
    circuit = NeurFlow(["fc", "layer4.1", "layer4.0"], tau=2, top_n=6, ig_steps=2, select="all").fit(
        tiny_resnet, random_images, 0).circuit_
    text = circuit.to_json()
    assert Circuit.from_json(text) == circuit
    schema = json.loads((SCHEMAS / "circuit.schema.json").read_text())
    jsonschema.validate(json.loads(text), schema)
    # the committed schemas are exactly what `neurflow schema circuit|jobspec` generates from the Structs
    for document in ("circuit", "jobspec"):
        assert (SCHEMAS / f"{document}.schema.json").read_text() == schema_text(document), \
            f"regenerate: neurflow schema {document} > core/schemas/{document}.schema.json"


def test_from_json_rejects_other_versions_and_bad_fields():
    with pytest.raises(ValueError, match="unsupported circuit schema 'neurflow.circuit/99'; this version reads "
                                         "neurflow.circuit/1, neurflow.circuit/2, neurflow.circuit/3"):
        Circuit.from_json(b'{"schema": "neurflow.circuit/99"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        Circuit.from_json(b"{nope")
    for version in ("1", "2", "3"):
        doc = msgspec.json.decode(b'{"schema": "neurflow.circuit/%s", "model": {}}' % version.encode())
        with pytest.raises(ValueError, match="invalid circuit document"):
            Circuit.from_json(msgspec.json.encode(doc))


def test_vit_token_layers_fit(tiny_vit):
    x = torch.randn(4, 3, 32, 32)
    for token_reduce in ("mean", "cls"):
        circuit = NeurFlow(["heads.head", "encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_0"],
                           tau=3, top_n=8, ig_steps=4, granularities=(1.0, 0.5), select="all",
                           token_reduce=token_reduce).fit(tiny_vit, x, 1).circuit_
        assert circuit.layers[1].shape == [17, 16]  # 16 patches + CLS, 16 channels
        assert 1 <= len(circuit.layers[1].neurons) <= 3
        assert all(0 <= e.neuron < 16 for n in circuit.layers[1].neurons for c in n.concepts for e in c.edges)


def test_progress_reports_every_stage_in_its_own_units(tiny_resnet, random_images):
    seen = []
    NeurFlow(["fc", "layer4.1", "layer4.0"], tau=2, top_n=6, ig_steps=2, select="all",
             progress=seen.append).fit(tiny_resnet, random_images, 0)
    stages = {e.stage for e in seen}
    assert {"forward pass", "selecting images", "activations", "ig fc", "ig layer4.1", "grouping neurons"} <= stages
    for stage in stages:
        last = [e for e in seen if e.stage == stage][-1]
        assert last.done == last.total and last.eta == 0.0  # every stage reaches its total
    units = {e.stage: e.unit for e in seen}
    assert units["activations"] == "patches" and units["ig fc"] == "neuron-patch pairs" and units["grouping neurons"] == "layers"
    assert all(e.elapsed >= 0 for e in seen)


def test_counters_move_inside_a_stage(tiny_resnet, random_images, monkeypatch):
    import neurflow.progress

    monkeypatch.setattr(neurflow.progress, "REPORT_EVERY_S", 0.0)  # every step, to see the steps
    seen = []
    NeurFlow(["fc", "layer4.1", "layer4.0"], tau=2, top_n=6, ig_steps=2, select="all", batch_size=2,
             forward_batch_size=8, progress=seen.append).fit(tiny_resnet, random_images, 0)
    for stage in ("activations", "ig layer4.1"):
        steps = [e.done for e in seen if e.stage == stage]
        assert len(steps) >= 2 and steps == sorted(steps) and 0 < steps[0] < steps[-1], (stage, steps)
        assert any(e.eta is not None and e.eta > 0 for e in seen if e.stage == stage and e.done < e.total)


def test_a_resampled_ig_stage_counts_on_instead_of_starting_over(tiny_resnet, random_images, monkeypatch):
    """The adaptive preset runs a layer's IG twice when rankings are unstable (the resampled patches):
    the stage's counter keeps rising and its total grows by the second call's pairs."""
    import neurflow.progress

    monkeypatch.setattr(neurflow.progress, "REPORT_EVERY_S", 0.0)
    seen = []
    flow = NeurFlow(["fc", "layer4.1", "layer4.0"], tau=4, top_n=12, ig_patches=3, ig_stability=1000.0, batch_size=2,
                    select="all", progress=seen.append).fit(tiny_resnet, random_images, 0)
    ig = {layer.name: layer.ig for layer in flow.circuit_.layers if layer.ig is not None}
    resampled = [name for name, acc in ig.items() if acc.resampled]
    assert resampled, "nothing was resampled: the test would not see a second IG call"
    for name in resampled:
        events = [e for e in seen if e.stage == f"ig {name}"]
        done = [e.done for e in events]
        assert done == sorted(done) and events[-1].done == events[-1].total, (name, done)
        assert events[-1].total == ig[name].pairs
        assert events[0].total < events[-1].total  # the second call's pairs were added
