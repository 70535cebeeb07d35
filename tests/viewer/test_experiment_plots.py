"""``neurflow experiments`` end to end on a small random resnet18: the JSON document and its PNG plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from neurflow.cli import main
from neurflow.core.experiments.results import ExperimentResults
from neurflow.viewer.experiment_plots import write_plots


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "model.safetensors"))
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = root / "images" / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    spec = {
        "model": {"arch": "torchvision:resnet18", "weights": "model.safetensors", "num_classes": 2, "input_size": 32,
                  "class_names": ["dog", "cat"]},
        "data": {"images": "images", "target_class": [0, 1], "select": "all"},
        "engine": {"layers": ["fc", "layer4.1", "layer4.0"], "tau": 3, "top_n": 6, "granularities": [1.0, 0.5],
                   "ig_steps": 4, "n_groups": 2},
        "experiments": {"fidelity": {"n_random": 2},
                        "edge_fidelity": {"subset_sizes": [1, 4], "n_subsets": 5, "n_neurons": 1,
                                          "methods": ["integrated_gradients", "activation", "saliency"]},
                        "optimality": {"n_random": 4, "n_neurons": 1}},
    }
    (root / "spec.json").write_text(json.dumps(spec))
    return root


def test_the_command_writes_numbers_and_plots(job, capsys):
    pytest.importorskip("captum")
    out = job / "out"
    threads = torch.get_num_threads()
    assert main(["experiments", str(job / "spec.json"), "--out", str(out)]) == 0
    torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    res = ExperimentResults.from_json((out / "experiments.json").read_text())
    assert res.classes == [0, 1] and res.tau == 3
    assert {c.class_index for c in res.fidelity.curves} == {0, 1}
    assert all(c.n_images == 6 for c in res.fidelity.curves)  # true labels from the dog/ and cat/ folders
    assert set(res.edge_fidelity.methods) == {"integrated_gradients", "activation", "saliency"}
    assert {(r.upper, r.lower) for r in res.optimality.rows} == {("fc", "layer4.1"), ("layer4.1", "layer4.0")}
    assert "fidelity: accuracy on images whose true label is the class" in printed
    names = {"fidelity.png", "edge_fidelity.png", "sum_vs_mean.png", "optimality.png"}
    for name in names:
        assert f"plot: {out / name}" in printed
        image = np.asarray(Image.open(out / name).convert("L"), dtype=float)
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert image.std() > 10 and (image < 100).mean() > 0.005  # drawn lines and text, not a blank canvas


def test_plots_only_for_the_experiments_that_ran(job, tmp_path):
    res = ExperimentResults.from_json((job / "out" / "experiments.json").read_text()) \
        if (job / "out" / "experiments.json").is_file() else None
    if res is None:
        pytest.skip("needs the document of the command test")
    res.edge_fidelity = None
    res.optimality = None
    assert [p.name for p in write_plots(res, tmp_path)] == ["fidelity.png"]


def test_a_bad_spec_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "spec.json").write_text(json.dumps({"model": {}, "experiments": {}}))
    assert main(["experiments", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurflow experiments: error: invalid experiment spec:") and "Traceback" not in err
