"""The engine from the command line: `neurflow run` and `neurflow layers` in a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from neurflow.core.circuit_arrays import read_circuit


def neurflow(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "neurflow.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def make_job(tmp_path, **engine):
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(num_classes=3).state_dict(), str(tmp_path / "w.safetensors"))
    rng = np.random.default_rng(0)
    for i in range(4):
        (tmp_path / "imgs" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"c{i % 2}" / f"{i}.png")
    spec = {"model": {"arch": "torchvision:resnet18", "weights": "w.safetensors", "num_classes": 3, "input_size": 32,
                      "class_names": ["a", "b", "c"]},
            "data": {"images": "imgs", "target_class": 1, "select": "all"},
            "engine": {"layers": ["fc", "layer4.1", "layer4.0"], "tau": 3, "top_n": 8, "ig_steps": 4, **engine}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return spec


def test_run_writes_a_circuit_with_provenance(tmp_path):
    make_job(tmp_path)
    result = neurflow("run", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    circuit = read_circuit(out / "circuit.json")  # compact: with out/circuit.arrays.safetensors
    assert sorted(p.name for p in out.iterdir()) == ["circuit.arrays.safetensors", "circuit.json"]  # stages removed
    assert circuit.layers[1].neurons[0].concepts[0].vector
    assert circuit.target.class_index == 1 and circuit.target.name == "b"
    assert [img.path for img in circuit.images] == ["c0/0.png", "c0/2.png", "c1/1.png", "c1/3.png"]
    assert (circuit.images[0].width, circuit.images[0].height) == (44, 36)
    assert len(circuit.model.weights_sha256) == 64 and circuit.params.tau == 3
    ex = circuit.layers[1].neurons[0].concepts[0].exemplars[0]
    assert 0 <= ex.box[0] < ex.box[2] <= 44 and 0 <= ex.box[1] < ex.box[3] <= 36
    assert set(circuit.timings) >= {"select", "activations", "layer:fc", "layer:layer4.1", "groups"}


def test_run_reports_bad_spec_in_one_line(tmp_path):
    make_job(tmp_path, bogus=1)
    result = neurflow("run", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "unknown field `bogus`" in result.stderr and "Traceback" not in result.stderr
    spec = json.loads((tmp_path / "spec.json").read_text())
    del spec["engine"]["bogus"]
    spec["engine"]["layers"] = ["fc", "layer44"]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    result = neurflow("run", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "unknown layer name 'layer44'; did you mean 'layer4'" in result.stderr


def test_layers_lists_names_and_shapes():
    result = neurflow("layers", "torchvision:resnet18", "--input-size", "64", "--num-classes", "8")
    assert result.returncode == 0, result.stderr
    rows = dict(line.split() for line in result.stdout.splitlines())
    assert rows["layer4.1"] == "512x2x2" and rows["fc"] == "8" and rows["layer1.0"] == "64x16x16"


def test_layers_within_a_budget_prints_estimates_and_the_deepest_list_that_fits():
    base = ("layers", "torchvision:resnet18", "--input-size", "32", "--num-classes", "3", "--images", "2")
    roomy = neurflow(*base, "--budget", "1h")
    assert roomy.returncode == 0, roomy.stderr
    assert json.loads(roomy.stdout) == ["fc", "layer4.1", "layer4.0", "layer3", "layer2", "layer1"]
    assert "layer4.1" in roomy.stderr and "512 channels" in roomy.stderr and "estimate" in roomy.stderr
    tight = neurflow(*base, "--budget", "0.001s")  # nothing fits: the shortest list, the class and one layer
    assert tight.returncode == 0 and json.loads(tight.stdout) == ["fc", "layer4.1"]
    bad = neurflow(*base, "--budget", "ten minutes")
    assert bad.returncode != 0 and "write seconds (600, 600s), minutes (10m) or hours (1.5h)" in bad.stderr
