"""Outputs NeurFlow could read wrongly without an error are measured or refused (issue 19, item 5).

Each test failed before its fix: timm's Swin, which accepts only its own input size, had its
channels-last stages read channels-first (image rows as neurons); window-attention maps whose first
axis is not the batch were listed; ablating a freshly loaded channels-last model zeroed image rows;
batch norms without running statistics mixed the patches of a batch."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from neurflow.core.ablation import ablate
from neurflow.core.engine import NeurFlow
from neurflow.core.layer_access import LayerAccess, probe_layers
from neurflow.core.layer_catalog import deep_layers, probe_model

timm = pytest.importorskip("timm")


def timm_swin() -> nn.Module:
    """timm's Swin-T layout at 112 px and small widths: it refuses every other input size."""
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, img_size=112,
                             embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)).eval()


@pytest.fixture(scope="module")
def swin() -> nn.Module:
    return timm_swin()


def test_a_fixed_size_swin_is_measured_channels_last(swin):
    with pytest.raises(Exception):  # the point of the test: the size probe cannot run
        swin(torch.zeros(1, 3, 224, 224))
    probes = probe_model(swin, 112)
    for name, side, width in (("layers.0", 28, 24), ("layers.2", 7, 96), ("layers.3", 4, 192)):
        p = probes[name]
        assert (p.layout, p.layout_measured, p.problem) == ("HWC", True, None), name
        assert p.canonical_shape == (width, side, side)
    assert probes["patch_embed.proj"].layout == "CHW"  # the conv before the permute stays channels first
    assert deep_layers(swin, probes)[:2] == ["head.fc", "layers.3"]


def test_a_fit_on_a_fixed_size_swin_reads_channels(swin):
    torch.manual_seed(2)
    images = torch.randn(3, 3, 112, 112)
    circuit = NeurFlow(["head.fc", "layers.3", "layers.2"], tau=3, top_n=6, ig_steps=2, select="all",
                       granularities=(1.0,)).fit(swin, images, 1).circuit_
    assert circuit.layers[1].shape == [192, 4, 4] and circuit.layers[2].shape == [96, 7, 7]
    assert all(0 <= n.id < 192 for n in circuit.layers[1].neurons)
    assert max(e.neuron for n in circuit.layers[1].neurons for c in n.concepts for e in c.edges) < 96


def test_outputs_whose_first_axis_is_not_the_batch_are_refused(swin):
    p = probe_model(swin, 112)["layers.0.blocks.0.attn.softmax"]  # (B * windows, heads, N, N)
    assert "not the batch axis" in p.problem and "16 for one image, 48 for three" in p.problem
    with pytest.raises(ValueError, match="not the batch axis"):
        LayerAccess(swin, ["layers.0.blocks.0.attn.softmax"]).probe(torch.zeros(1, 3, 112, 112))


class GlobalMix(nn.Module):
    """Accepts 16 px only; ``mix`` outputs the same value at every position, so no measurement can
    tell its channel axis from a position axis."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.mix = nn.Identity()
        self.fc = nn.Linear(5 * 16 * 16, 2)

    def forward(self, x):
        assert x.shape[-1] == 16, "16 px only"
        y = self.conv(x)
        y = self.mix(y.mean(dim=(2, 3), keepdim=True).expand_as(y) + 0.0)
        return self.fc(y.flatten(1))


def test_a_map_whose_channel_axis_cannot_be_established_is_refused_naming_the_axes():
    model = GlobalMix().eval()
    p = probe_layers(model, torch.randn(1, 3, 16, 16), ["mix", "conv"])
    assert p["conv"].layout == "CHW" and p["conv"].problem is None
    assert "ambiguous" in p["mix"].problem and "axis 1 (size 5)" in p["mix"].problem
    assert "axis 3 (size 16)" in p["mix"].problem
    with pytest.raises(ValueError, match="layer 'mix' cannot be read: the layout"):
        NeurFlow(["fc", "mix"], select="all").fit(model, torch.randn(2, 3, 16, 16), 0)


def test_ablation_on_a_freshly_loaded_channels_last_model_zeroes_channels():
    model = timm_swin()  # never probed
    seen = {}

    def grab(_m, _i, out):
        seen["out"] = out.clone()  # the last call: the ablated pass, after the probe's own passes

    with ablate(model, {"layers.3": [0, 5]}), torch.no_grad():
        model.layers[3].register_forward_hook(grab)  # after the ablation's hook: it sees the ablated output
        model(torch.randn(2, 3, 112, 112))
    out = seen["out"]  # (B, H, W, C)
    assert (out[..., [0, 5]] == 0).all()
    assert (out[:, 0] != 0).any()  # the first image row is untouched


def test_ablation_refuses_an_unreadable_layer():
    model = GlobalMix().eval()
    with pytest.raises(ValueError, match="'mix' cannot be ablated: the layout"):
        with ablate(model, {"mix": [0]}), torch.no_grad():
            model(torch.randn(1, 3, 16, 16))


def test_batch_norm_without_running_statistics_is_refused():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3, norm_layer=lambda c: nn.BatchNorm2d(c, track_running_stats=False))
    with pytest.raises(ValueError, match=r"batch norm 'bn1' \(and 19 more\) has no running statistics"):
        NeurFlow(["fc", "layer4"], select="all").fit(model.eval(), torch.randn(2, 3, 32, 32), 0)


# -- the images' real preprocessing is recorded ---------------------------------------------------------
def fit_small(model, images, **kw):
    return NeurFlow(["fc", "layer4"], tau=2, top_n=4, ig_steps=2, select="all", granularities=(1.0,)).fit(
        model, images, 0, **kw).circuit_


def test_a_fit_on_an_image_set_records_its_preprocessing(tmp_path, tiny_resnet):
    from PIL import Image

    from neurflow.core.images import ImageSet, Preprocess

    for k in range(2):
        Image.new("RGB", (40, 36), (60 * k, 120, 200)).save(tmp_path / f"{k}.png")
    images = ImageSet.from_folder(tmp_path, Preprocess(32, [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]))
    model = fit_small(tiny_resnet, images).model
    assert (model.mean, model.std, model.normalisation) == ([0.5, 0.4, 0.3], [0.25, 0.2, 0.1], "recorded")


def test_a_bare_tensor_records_mean_and_std_or_unknown_which_debug_image_refuses(tiny_resnet, random_images):
    from PIL import Image

    from neurflow.core.debug import debug_image

    known = fit_small(tiny_resnet, random_images[:2], mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    assert (known.model.mean, known.model.normalisation) == ([0.1, 0.2, 0.3], "recorded")
    unknown = fit_small(tiny_resnet, random_images[:2])
    assert unknown.model.normalisation == "unknown"
    with pytest.raises(ValueError, match="does not record how its images were normalised"):
        debug_image(tiny_resnet, unknown, Image.new("RGB", (32, 32)), layer="layer4")
    with pytest.raises(ValueError, match="give both mean and std"):
        fit_small(tiny_resnet, random_images[:2], mean=[0.1, 0.2, 0.3])


def test_a_job_spec_without_mean_and_std_warns_naming_the_defaults():
    from neurflow.core.jobspec import ModelSpec, NormalisationWarning

    spec = ModelSpec(arch="torchvision:resnet18", weights="w.safetensors", num_classes=3, input_size=32)
    with pytest.warns(NormalisationWarning, match=r"model.mean and model.std left out.*mean \[0.485, 0.456, 0.406\] "
                                                  r"and std \[0.229, 0.224, 0.225\]"):
        assert spec.normalisation() == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    given = ModelSpec(arch="torchvision:resnet18", weights="w.safetensors", num_classes=3, input_size=32,
                      mean=[0.5] * 3, std=[0.5] * 3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert given.normalisation() == ([0.5] * 3, [0.5] * 3)



# -- models that return several outputs; layers in parallel branches -----------------------------------
class TwoHeads(nn.Module):
    """Returns a dict or a tuple around the class scores of a tiny CNN."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        features = self.block(torch.relu(self.conv(x))).mean(dim=(2, 3))
        logits = self.fc(features)
        return {"features": features, "logits": logits} if self.kind == "dict" else (features, logits)


@pytest.mark.parametrize("kind, output", [("dict", "logits"), ("tuple", 1)])
def test_an_output_selector_picks_the_class_scores(kind, output):
    from PIL import Image

    from neurflow.core.debug import debug_image

    torch.manual_seed(0)
    model, images = TwoHeads(kind).eval(), torch.rand(4, 3, 16, 16)
    flow = NeurFlow(["fc", "block", "conv"], tau=2, top_n=4, ig_steps=2, select="all", n_groups=1)
    with pytest.raises(ValueError, match=f"the model returns a {kind}.*set the engine parameter output"):
        flow.fit(model, images, 0)
    circuit = flow.set_params(output=output).fit(model, images, 0, mean=[0.0] * 3, std=[1.0] * 3).circuit_
    assert circuit.params.output == output and circuit.layers[1].neurons
    result = debug_image(model, circuit, Image.new("RGB", (16, 16), (200, 10, 10)), layer="block")
    with torch.no_grad():
        expected = float(model(torch.zeros(1, 3, 16, 16) + torch.tensor([200 / 255, 10 / 255, 10 / 255]).view(1, 3, 1, 1))[
            "logits" if kind == "dict" else 1][0, 0])
    assert result.logit == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="not among the model's outputs|not an index"):
        flow.set_params(output="scores" if kind == "dict" else 2).fit(model, images, 0)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(4, 3, 1)
        self.b2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x)], dim=1)


class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.mixed = Mixed()
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.mixed(torch.relu(self.stem(x))).mean(dim=(2, 3)))


def test_layers_in_parallel_branches_are_refused_naming_the_branches():
    torch.manual_seed(0)
    model, images = Inception().eval(), torch.rand(3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"layer 'mixed.b2' does not read layer 'mixed.b1': they are parallel "
                                         r"branches of 'mixed'.*read 'mixed', where they are joined"):
        NeurFlow(["fc", "mixed.b2", "mixed.b1"], tau=2, top_n=4, ig_steps=2, select="all").fit(model, images, 0)
    circuit = NeurFlow(["fc", "mixed", "stem"], tau=2, top_n=4, ig_steps=2, select="all").fit(model, images, 0).circuit_
    assert circuit.layers[1].shape == [6, 16, 16]
