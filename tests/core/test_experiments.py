"""The paper's experiments on a network whose wiring is known (conftest.Planted), and their plumbing:
labelled images, the spec, the results document and the whole runner."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
import torch
from PIL import Image

from neurflow.core.engine import NeurFlow
from neurflow.core.experiments.attributions import channel_importance
from neurflow.core.experiments.edge_fidelity import edge_fidelity
from neurflow.core.experiments.fidelity import core_layers, fidelity_curves
from neurflow.core.experiments.labeled_images import csv_labels, folder_labels, images_of_class, load_labeled_images
from neurflow.core.experiments.optimality import optimality
from neurflow.core.experiments.patch_pool import PatchPool
from neurflow.core.experiments.results import ExperimentResults
from neurflow.core.experiments.runner import run_experiments
from neurflow.core.experiments.spec import load_experiment_spec, parse_experiment_spec
from neurflow.core.experiments.summary import summary_lines
from neurflow.core.images import Preprocess
from neurflow.core.layer_access import LayerAccess
from neurflow.core.patches import build_index

GRANULARITIES = (1.0, 0.5)


def planted_inputs(n: int = 16) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.tensor(rng.uniform(0, 1, (n, 3, 8, 8)) * rng.uniform(0, 1, (n, 3, 1, 1)), dtype=torch.float32)


@pytest.fixture
def fitted(planted):
    x = planted_inputs()
    circuit = NeurFlow(["fc", "up", "low"], tau=2, top_n=10, granularities=GRANULARITIES, select="all",
                       ig_steps=8).fit(planted, x, 0).circuit_
    return circuit, x


def test_core_sets_are_the_planted_wiring(fitted):
    circuit, _ = fitted
    # class 0 reads up {0, 1}; up 0 reads low {0, 1} and up 1 reads low {2, 3}
    assert core_layers(circuit) == [("up", [0, 1], 3), ("low", [0, 1, 2, 3], 6)]


def test_masking_core_neurons_hurts_more_than_random_and_retaining_them_keeps_the_class(planted, fitted):
    circuit, x = fitted
    curves = {(c.mode, c.operation): c for c in fidelity_curves(planted, circuit, x, 0, 6, np.random.default_rng(0), 2)}
    assert set(curves) == {("single", "mask"), ("single", "retain"), ("multi", "mask"), ("multi", "retain")}
    for mode in ("single", "multi"):
        for p in curves[(mode, "mask")].points:
            # zeroing the planted inputs removes the class-0 evidence (random sets of 6 of the 9 channels
            # may remove it too)
            assert p.core_logit <= p.random_logit and p.core_logit == 0.0
            assert p.core_accuracy <= p.random_accuracy
        assert curves[(mode, "mask")].points[0].core_logit < curves[(mode, "mask")].points[0].random_logit
        for p in curves[(mode, "retain")].points:
            assert p.core_logit == pytest.approx(curves[(mode, "retain")].base_logit, abs=1e-5)  # nothing else feeds it
            assert p.core_accuracy >= p.random_accuracy
    assert curves[("single", "mask")].points[0].core_logit == 0.0
    assert curves[("multi", "mask")].points[1].n_channels == 2 + 4


def neuron_pool(planted, x) -> PatchPool:
    access = LayerAccess(planted, ["fc", "up", "low"])
    return PatchPool(access, x, build_index(len(x), 8, GRANULARITIES, 0.5), "low", "up", top_n=10)


def test_ig_importance_predicts_the_damage_of_masking_and_sums_beat_means(planted):
    pool = neuron_pool(planted, planted_inputs())
    assert pool.overlap(0, []) == 1.0
    maps, x = pool.top_maps(0)
    importance, notes = channel_importance(pool.block, planted, maps, 0, ["integrated_gradients", "activation"], 8)
    assert notes == []
    # up 0 reads only low 0 and 1
    assert set(np.nonzero(importance["integrated_gradients"] > 1e-9)[0]) == {0, 1}
    rows, sum_mean = edge_fidelity(pool, 0, 0, importance, [1, 2, 3], 20, np.random.default_rng(0))
    ig = {r.subset_size: r.pearson for r in rows if r.method == "integrated_gradients"}
    act = {r.subset_size: r.pearson for r in rows if r.method == "activation"}
    assert all(v < -0.9 for v in ig.values())
    assert all(act[s] is None or act[s] > ig[s] + 0.5 for s in ig)  # activation alone does not know the wiring
    assert sum_mean.pearson_sum < sum_mean.pearson_mean


def test_captum_methods_run_when_available_and_say_why_when_not(planted):
    pytest.importorskip("captum")
    pool = neuron_pool(planted, planted_inputs())
    maps, _ = pool.top_maps(1)
    importance, notes = channel_importance(pool.block, planted, maps, 1, ["saliency", "gradient_shap", "lrp"], 8)
    assert set(np.nonzero(importance["saliency"] > 1e-9)[0]) == {2, 3}
    assert set(np.nonzero(importance["gradient_shap"] > 1e-9)[0]) == {2, 3}
    assert "lrp" not in importance and notes and notes[0].startswith("lrp: skipped")


def test_the_core_set_beats_random_sets_of_its_size(planted, fitted):
    circuit, x = fitted
    pool = neuron_pool(planted, x)
    maps, _ = pool.top_maps(0)
    importance, _ = channel_importance(pool.block, planted, maps, 0, ["integrated_gradients", "activation"], 8)
    row = optimality(pool, 0, 0, [0, 1], importance, 30, np.random.default_rng(0))
    assert row.set_size == 2
    assert row.core_overlap < row.random_overlap and row.total > 0
    assert row.criteria["integrated_gradients"] == row.core_overlap
    assert row.core_better_fraction > 0.5 and row.negative <= 0


# -- labelled images -----------------------------------------------------------------------------

def test_folder_labels_accept_names_indices_and_class_prefixes():
    paths = ["class_3_red/a.png", "1/b.png", "cat/c.png", "class-0/d.png"]
    assert folder_labels(paths, ["dog", "x", "y", "z", "cat"], 5) == [3, 1, 4, 0]
    with pytest.raises(ValueError, match="not inside a class folder"):
        folder_labels(["a.png"], [], 5)
    with pytest.raises(ValueError, match="cannot read a class from 'n01440764'.*5 classes"):
        folder_labels(["n01440764/a.png"], [], 5)


def test_csv_labels(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("path,label\na.png,2\nsub/b.png,cat\n")
    assert csv_labels(table, ["a.png", "sub/b.png", "c.png"], ["x", "cat"], 3) == [2, 1, None]
    table.write_text("missing.png,1\n")
    with pytest.raises(ValueError, match="not found under the image folder"):
        csv_labels(table, ["a.png"], [], 3)
    table.write_text("a.png\n")
    with pytest.raises(ValueError, match="expected 'path,label'"):
        csv_labels(table, ["a.png"], [], 3)


def write_class_folders(root, x: torch.Tensor, n_classes: int = 2):
    for i, img in enumerate(x):
        folder = root / f"class_{i % n_classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")


def test_labelled_images_from_folders(tmp_path):
    write_class_folders(tmp_path, planted_inputs(6))
    images = load_labeled_images(tmp_path, Preprocess(8, (0, 0, 0), (1, 1, 1)), [], 2)
    assert images.labels == [0, 0, 0, 1, 1, 1]
    assert len(images_of_class(images, 1, limit=2)) == 2
    with pytest.raises(ValueError, match=r"no image has the true label 5; images per label: \{0: 3, 1: 3\}"):
        images_of_class(images, 5)


# -- spec, results document, runner ---------------------------------------------------------------

SPEC = {
    "model": {"arch": "planted", "weights": "none.safetensors", "num_classes": 2, "input_size": 8,
              "mean": [0, 0, 0], "std": [1, 1, 1]},
    "data": {"images": "images", "target_class": 0, "select": "all"},
    "engine": {"layers": ["fc", "up", "low"], "tau": 2, "top_n": 10, "granularities": list(GRANULARITIES),
               "ig_steps": 8, "n_groups": 2},
    "experiments": {"fidelity": {"taus": [1, 2], "n_random": 3},
                    "edge_fidelity": {"subset_sizes": [1, 2], "n_subsets": 6, "n_neurons": 1,
                                      "methods": ["integrated_gradients", "activation"]},
                    "optimality": {"n_random": 5, "n_neurons": 2}},
}


def test_spec_errors_name_the_field():
    with pytest.raises(ValueError, match=r"experiments.fidelity.n_random"):
        parse_experiment_spec(json.dumps(SPEC | {"experiments": {"fidelity": {"n_random": 0}}}))
    with pytest.raises(ValueError, match="unknown field `colour`"):
        parse_experiment_spec(json.dumps(SPEC | {"experiments": {"colour": 1}}))
    with pytest.raises(ValueError, match="methods"):
        parse_experiment_spec(json.dumps(SPEC | {"experiments": {"edge_fidelity": {"methods": ["magic"]}}}))
    plain = parse_experiment_spec(json.dumps({k: v for k, v in SPEC.items() if k != "experiments"}))
    assert plain.experiments.fidelity.enabled and plain.experiment_classes() == [0]


def test_runner_end_to_end_and_the_document_round_trips(planted, tmp_path):
    write_class_folders(tmp_path / "images", planted_inputs(12))
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    spec, base = load_experiment_spec(tmp_path / "spec.json")
    stages = set()
    res = run_experiments(spec, base, progress=lambda event: stages.add(event.stage), model=planted)
    assert {"fidelity", "neurons up<-low (class 0)"} <= stages
    assert {(c.tau, c.mode, c.operation) for c in res.fidelity.curves} == {
        (t, m, o) for t in (1, 2) for m in ("single", "multi") for o in ("mask", "retain")}
    assert all(c.n_images == 6 for c in res.fidelity.curves)  # the images in class_0/ only
    pairs = {(r.upper, r.lower) for r in res.edge_fidelity.rows}
    assert pairs == {("fc", "up"), ("up", "low")}
    assert res.edge_fidelity.methods == ["integrated_gradients", "activation"]
    assert len(res.optimality.rows) == 1 + 2  # fc has one core neuron (the class), up has two
    text = res.to_json()
    again = ExperimentResults.from_json(text)
    assert again == res and msgspec.json.decode(text)["schema"] == "neurflow.experiments/1"
    assert any("fidelity" in line for line in summary_lines(res))
    with pytest.raises(ValueError, match="invalid experiments document"):
        ExperimentResults.from_json(text.replace('"arch"', '"arch_"'))
