"""Every bad input named in the engine issue gets a clear error (or a warning) that says what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from neurflow.core.engine import FewPatchesWarning, NeurFlow
from neurflow.core.jobspec import parse_jobspec
from neurflow.core.params import FAST_PRESET, EngineParams
from neurflow.core.model_intake import load_model


def test_unknown_layer_suggests_close_names(tiny_resnet, random_images):
    with pytest.raises(ValueError, match=r"unknown layer name 'layer4.l'; did you mean 'layer4.1', 'layer4.0'") as err:
        NeurFlow(["fc", "layer4.l"]).fit(tiny_resnet, random_images, 0)
    assert "layer1.0.conv1" not in str(err.value)  # close names only, never the whole list


def test_layers_in_wrong_order(tiny_resnet, random_images):
    with pytest.raises(ValueError, match="ordered from the output down"):
        NeurFlow(["layer4.0", "layer4.1"], select="all").fit(tiny_resnet, random_images, 0)


def test_no_image_predicted_as_target_reports_counts(planted):
    black = torch.zeros(4, 3, 8, 8)  # class-1 logit 2.5 vs class-0 logit 1.2 in the planted model
    with pytest.raises(ValueError, match=r"no image is predicted as class 0; predictions per class \(classes with none left out\): \{1: 4\}"):
        NeurFlow(["fc", "up", "low"], tau=2, top_n=4).fit(planted, black, 0)


def test_target_class_out_of_range(tiny_resnet, random_images):
    with pytest.raises(ValueError, match=r"target class 7 is out of range; the model has 3 classes \(0..2\)"):
        NeurFlow(["fc", "layer4.1"], select="all").fit(tiny_resnet, random_images, 7)


def test_fewer_patches_than_top_n_warns_and_uses_all(planted):
    x = torch.rand(3, 3, 8, 8)
    with pytest.warns(FewPatchesWarning, match="only 3 patches for top_n=50"):
        circuit = NeurFlow(["fc", "up", "low"], tau=2, top_n=50, granularities=(1.0,), select="all",
                           ig_steps=2).fit(planted, x, 0).circuit_
    assert sum(c.size for c in circuit.layers[0].neurons[0].concepts) == 3


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.low = nn.Conv2d(3, 4, 1)
        self.up = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        h = self.low(x)
        h = torch.where(h > 0, h / 0.0, h)  # inf wherever the input is positive
        return self.up(h).mean(dim=(2, 3))


def test_non_finite_activations_name_the_layer():
    torch.manual_seed(0)
    model = Exploding().eval()
    with pytest.raises(ValueError, match="non-finite"):
        NeurFlow(["up", "low"], select="all").fit(model, torch.rand(2, 3, 8, 8), 0)


def test_non_finite_hidden_layer_is_named():
    class HiddenNaN(nn.Module):
        def __init__(self):
            super().__init__()
            self.low = nn.Conv2d(3, 4, 1)
            self.mid = nn.Conv2d(4, 4, 1)
            self.up = nn.Linear(4, 2)

        def forward(self, x):
            h = self.mid(self.low(x))
            return self.up(torch.nan_to_num(h, nan=0.0).mean(dim=(2, 3)))

    model = HiddenNaN().eval()
    with torch.no_grad():
        model.low.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"layer 'mid' produces non-finite activations"):
        NeurFlow(["up", "mid", "low"], select="all").fit(model, torch.rand(2, 3, 8, 8), 0)


def test_weights_that_do_not_fit_name_keys_and_shapes(tmp_path):
    state = torchvision.models.resnet18(num_classes=5).state_dict()
    state.pop("layer1.0.bn1.running_mean")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as err:
        load_model("torchvision:resnet18", path, num_classes=3)
    message = str(err.value)
    assert "missing keys: layer1.0.bn1.running_mean" in message
    assert "unexpected keys: extra.weight" in message
    assert "fc.weight: file (5, 512) vs architecture (3, 512)" in message


def test_pickles_and_unknown_architectures_are_refused(tmp_path):
    pt = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, pt)
    with pytest.raises(ValueError, match="must be a .safetensors file"):
        load_model("resnet18", pt, 3)
    with pytest.raises(ValueError, match="unknown torchvision architecture name 'resnet19'; did you mean 'resnet18'"):
        load_model("torchvision:resnet19", None, 3)
    with pytest.raises(ValueError, match="unknown architecture family 'keras'"):
        load_model("keras:resnet18", None, 3)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read safetensors file g.safetensors"):
        load_model("resnet18", garbage, 3)


def test_timm_names_build():
    model = load_model("timm:resnet18", None, 4)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_job_spec_rejects_unknown_keys_and_bad_values():
    base = ('{"model": {"arch": "resnet18", "weights": "w.safetensors", "num_classes": 3, "input_size": 32},'
            ' "data": {"images": "d", "target_class": 0}, "engine": {"layers": ["fc", "layer4.1"]%s}}')
    assert parse_jobspec(base % "").engine == EngineParams(layers=["fc", "layer4.1"])
    assert parse_jobspec(base % ', "preset": "fast", "ig_steps": 20').engine.resolved().ig_steps == 20
    fast = parse_jobspec(base % ', "preset": "fast"').engine.resolved()
    assert (fast.ig_steps, fast.batch_size) == (FAST_PRESET["ig_steps"], FAST_PRESET["batch_size"]) != (50, 8)
    with pytest.raises(ValueError, match=r"unknown field `taux` - at `\$.engine`"):
        parse_jobspec(base % ', "taux": 3')
    with pytest.raises(ValueError, match=r"Expected `int` >= 1 - at `\$.engine.tau`"):
        parse_jobspec(base % ', "tau": 0')
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_jobspec(b"{")


def test_bad_engine_parameters(planted):
    """The constructor stores anything (scikit-learn's contract); fit names the parameter and what it is."""
    x = torch.rand(2, 3, 8, 8)
    for kwargs, message in (
        (dict(select="some"), r"parameter select: Invalid enum value 'some' - at `\$.select` \(select: predicted: "),
        (dict(granularities=(1.5,)), r"parameter granularities: Expected `float` <= 1.0 - at `\$.granularities\[0\]`"),
        (dict(tau=0), r"parameter tau: Expected `int` >= 1 - at `\$.tau` \(tau: Core neurons kept"),
        (dict(n_groups={"up": 0}), r"parameter n_groups: .* - at `\$.n_groups"),
    ):
        engine = NeurFlow(["fc", "up", "low"], **kwargs)
        with pytest.raises(ValueError, match=message):
            engine.fit(planted, x, 0)
    with pytest.raises(ValueError, match=r"parameter layers: Expected `array` of length >= 2"):
        NeurFlow(["fc"]).fit(planted, x, 0)
    with pytest.raises(TypeError, match="taux"):
        NeurFlow(["fc", "up"], taux=3)  # a misspelt name fails at once, as with any Python signature
    with pytest.raises(ValueError, match="inside layer"):
        NeurFlow(["layer4", "layer4.1"]).fit(torchvision.models.resnet18(num_classes=2).eval(), torch.rand(1, 3, 32, 32), 0)
