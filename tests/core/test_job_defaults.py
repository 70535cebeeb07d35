"""Job-spec conveniences of issue 10: ``layers: "auto"`` and ``class_names: "builtin:imagenet1k"``."""

from __future__ import annotations

import json

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from neurflow.core.jobspec import parse_jobspec
from neurflow.core.layer_budget import suggest
from neurflow.core.pipeline import fit_spec


def test_auto_layers_and_builtin_class_names(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    spec = parse_jobspec(json.dumps({
        "model": {"arch": "torchvision:resnet18", "weights": "w.safetensors", "num_classes": 1000, "input_size": 32,
                  "class_names": "builtin:imagenet1k"},
        "data": {"images": "imgs", "target_class": 1, "select": "all"},
        "engine": {"layers": "auto", "tau": 2, "top_n": 3, "granularities": [1.0], "preset": "fast", "n_groups": 1}}))
    circuit = fit_spec(spec, tmp_path)[1]
    # three 32 px images fit the default budget down to the last candidate
    assert [lay.name for lay in circuit.layers] == suggest(model, 32, spec.engine, 3).layers == [
        "fc", "layer4.1", "layer4.0", "layer3", "layer2", "layer1"]
    assert circuit.target.name == "goldfish"
