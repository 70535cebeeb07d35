"""Layers that used to be read silently wrong or crash: shared modules, channels-last outputs, in-place
ops after the lower layer, training mode; and the cut / debug / preprocessing details of issue 10."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from scipy.cluster.hierarchy import fcluster, linkage
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer

from neurflow.core import block_gradients

from .captum_reference import captum_native as _captum_native
from neurflow.core.circuit import Group, Member
from neurflow.core.clustering import cut, ward_silhouette
from neurflow.core.debug import log_barrier_scores
from neurflow.core.engine import NeurFlow
from neurflow.core.images import Geometry, Preprocess
from neurflow.core.integrated_gradients import integrated_gradients, multi_target_ig
from neurflow.core.layer_access import LayerAccess, probe_layers, readout
from neurflow.core.model_intake import list_layers


def captum_native(access, lower, upper, x, target, steps, reduce_dims):
    return _captum_native(access.model, lower, upper, x, target, steps, reduce_dims)


# -- shared modules ---------------------------------------------------------------------------------
def test_shared_module_is_refused_with_alternatives_and_not_listed(tiny_resnet, random_images):
    probes = probe_layers(tiny_resnet, random_images, ["layer1.0.relu", "layer1.0", "relu"])
    assert probes["layer1.0.relu"].calls == 2 and probes["relu"].calls == 1
    with pytest.raises(ValueError, match=r"layer 'layer1.0.relu' cannot be read: it runs 2 times in one forward "
                                         r"pass .*read one of 'layer1.0', 'layer1.0.bn1', 'layer1.0.bn2' instead"):
        NeurFlow(["fc", "layer1.0.relu"], select="all").fit(tiny_resnet, random_images, 0)
    names = [n for n, _ in list_layers(tiny_resnet, 32)]
    assert "layer1.0.relu" not in names and "layer4.1.relu" not in names
    assert {"relu", "layer1.0", "layer1.0.bn1", "fc"} <= set(names)


def test_list_layers_works_on_the_meta_device():
    with torch.device("meta"):
        model = torchvision.models.resnet18(num_classes=4)
        rows = dict(list_layers(model, 64))
    assert rows["layer4"] == (512, 2, 2) and "layer2.1.relu" not in rows


# -- channels-last ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                           window_size=[2, 2], num_classes=5).eval()


def test_channels_last_swin_is_read_channel_first_and_matches_captum(tiny_swin):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    probes = probe_layers(tiny_swin, x, ["features.3", "features.5", "permute"])
    assert probes["features.3"].layout == "HWC" and probes["features.3"].layout_measured
    assert probes["features.3"].shape == (4, 4, 16) and probes["features.3"].canonical_shape == (16, 4, 4)
    assert probes["permute"].layout == "CHW"
    access = LayerAccess(tiny_swin, ["features.5", "features.3"])
    with torch.no_grad():
        acts = access.readouts(x)
        native = {}
        h = tiny_swin.features[5].register_forward_hook(lambda _m, _i, o: native.update(o=o))
        tiny_swin(x)
        h.remove()
    # a neuron is a channel (the last dim of the native output), averaged over the 2x2 positions
    torch.testing.assert_close(acts["features.5"], native["o"].mean(dim=(1, 2)))
    _, shapes = access.call_order(x)
    assert shapes["features.5"] == (32, 2, 2)
    z = access.full_output(x, "features.3")
    assert z.shape == (2, 16, 4, 4)
    block = access.block("features.3", "features.5")
    target = int(readout(block(z)).mean(0).argmax())
    ours = integrated_gradients(block, z, target, steps=16)
    ref, z_native = captum_native(access, "features.3", "features.5", x, target, 16, (1, 2))
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref.permute(0, 3, 1, 2), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(z, z_native.permute(0, 3, 1, 2))


class Sequence1d(nn.Module):
    """Outputs (B, C, L): channel-first sequences, which the old readout took for (B, tokens, C)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.mix = nn.Conv1d(6, 5, 3, padding=1)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        seq = self.mix(self.embed(x).flatten(2))
        return self.head(seq.mean(dim=2))


def test_channel_first_sequences_are_detected_and_match_captum():
    torch.manual_seed(0)
    model, x = Sequence1d().eval(), torch.randn(3, 3, 16, 16)
    access = LayerAccess(model, ["head", "mix"])
    probes = access.probe(x)
    assert probes["mix"].layout == "CL" and probes["mix"].canonical_shape == (5, 16, 1)
    acts = access.readouts(x)
    with torch.no_grad():
        expected = model.mix(model.embed(x).flatten(2)).mean(dim=2)
    torch.testing.assert_close(acts["mix"], expected)
    z = access.full_output(x, "mix")
    ours = integrated_gradients(access.block("mix", "head"), z, 1, steps=10)
    ref, _ = captum_native(access, "mix", "head", x, 1, 10, ())
    torch.testing.assert_close(ours.squeeze(-1), ref, rtol=1e-4, atol=1e-7)


def test_fixed_size_vit_keeps_token_layout(tiny_vit):
    probes = probe_layers(tiny_vit, torch.zeros(1, 3, 32, 32), ["encoder.layers.encoder_layer_0", "conv_proj"])
    assert probes["encoder.layers.encoder_layer_0"].layout == "TC"
    assert not probes["encoder.layers.encoder_layer_0"].layout_measured  # the model accepts 32 px only
    assert probes["conv_proj"].layout == "CHW"


# -- in-place ops after the lower layer -------------------------------------------------------------
def _count_shortcut(monkeypatch) -> list[int]:
    calls = [0]
    original = block_gradients._InterpolatedConv2d.apply

    def counted(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(block_gradients._InterpolatedConv2d, "apply", counted)
    return calls


@pytest.mark.parametrize("arch,lower,upper,reads_modified", [
    ("vgg11", "features.6", "features.8", True),  # conv -> ReLU(inplace) -> conv: must not use the shortcut
    ("vgg11", "features.7", "features.8", False),  # the ReLU's own output feeds the conv: the shortcut fires
    ("vgg11", "features.3", "features.8", True),  # conv -> ReLU(inplace) -> pool -> ...
    ("resnet18", "layer1.0.bn1", "layer1.0.bn2", True),  # bn1 -> shared ReLU(inplace) -> conv2
    ("resnet18", "bn1", "layer1", True),  # the stem's bn1 -> ReLU(inplace) -> maxpool
])
def test_inplace_relu_after_the_lower_layer_matches_captum(monkeypatch, arch, lower, upper, reads_modified):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    access = LayerAccess(model, [upper, lower])
    z = access.full_output(x, lower)
    block = access.block(lower, upper)
    target = int(readout(block(z.clone())).mean(0).argmax())
    ref, _ = captum_native(access, lower, upper, x, target, 12, (2, 3))
    assert ref.abs().max() > 0
    plain = integrated_gradients(block, z, target, steps=12)
    torch.testing.assert_close(plain, ref, rtol=1e-4, atol=1e-7)
    calls = _count_shortcut(monkeypatch)
    with block_gradients.fast_block_gradients(model):
        fast = integrated_gradients(block, z, target, steps=12)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-7)
    if upper == "features.8":  # a convolution reads the block input: the shortcut fires only on unmodified rows
        assert (calls[0] == 0) == reads_modified


def test_ig_refuses_a_model_in_training_mode(tiny_resnet, random_images):
    access = LayerAccess(tiny_resnet, ["fc", "layer4"])
    z = access.full_output(random_images, "layer4")
    block = access.block("layer4", "fc")
    tiny_resnet.layer4.train()
    try:
        with pytest.raises(ValueError, match=r"training mode \('layer4'.*call model.eval\(\)"):
            multi_target_ig(block, z, [[0]] * len(z), steps=2)
    finally:
        tiny_resnet.eval()


# -- cuts, debugging, preprocessing -------------------------------------------------------------
def test_cut_returns_exactly_k_clusters_when_merge_heights_tie():
    square = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [10, 10], [11, 10]], dtype=float)
    tree = linkage(square, method="ward")
    assert len(set(fcluster(tree, 4, criterion="maxclust"))) < 4  # the tie that a height cut trips on
    for k in range(1, 7):
        assert len(set(cut(tree, k))) == k
        assert len(set(ward_silhouette(square, max_k=10, n_clusters=k))) == k
    assert cut(tree, 2).tolist() == [0, 0, 0, 0, 1, 1]


def test_debug_scores_use_the_given_number_of_nearest_members():
    # members are stored nearest the centroid first; the reference uses the first 5 (num_top_vecs)
    group = Group(id="g", members=[Member(0, 0), Member(1, 0), Member(2, 0)], exemplars=[])
    reference = {(0, 0): 1.0, (1, 0): 1.0, (2, 0): 1.0}
    acts = np.array([[1.0, 1.0, -1.0]])
    assert log_barrier_scores(acts, group, reference, n_members=2)[0] == pytest.approx(math.log(1 + 1e-6), abs=1e-5)
    assert log_barrier_scores(acts, group, reference)[0] == pytest.approx(math.log(1e-6) / 3, abs=1e-5)  # all three


def test_imagenet_resize_256_crop_224_matches_torchvision_and_maps_boxes_back():
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    pre = Preprocess(224, [0, 0, 0], [1, 1, 1], resize=256)
    ours = pre.pixels(image)
    ref = TF.to_tensor(TF.center_crop(TF.resize(image, 256), 224))
    assert ours.shape == ref.shape == (3, 224, 224)
    assert (ours - ref).abs().mean() < 2 / 255
    g = Geometry(400, 300, 224, resize=256)  # scale 300/256; the crop covers 262.5 source pixels
    assert g.to_source((0, 0, 224, 224)) == [69, 19, 331, 281]
    assert Geometry(400, 300, 224).to_source((0, 0, 224, 224)) == [50, 0, 350, 300]
    with pytest.raises(ValueError, match="resize .* must be at least input_size"):
        Preprocess(224, [0, 0, 0], [1, 1, 1], resize=200)


def test_ablation_zeroes_the_channel_dim_of_channels_last_outputs(tiny_swin):
    from neurflow.core.ablation import ablate

    x = torch.randn(1, 3, 32, 32)
    access = LayerAccess(tiny_swin, ["features.5"])
    access.probe(x)
    seen = {}
    h = tiny_swin.features[6].register_forward_pre_hook(lambda _m, args: seen.update(z=args[0].clone()))
    with ablate(tiny_swin, {"features.5": [1, 3]}), torch.no_grad():
        tiny_swin(x)
    h.remove()
    z = seen["z"]  # (1, 2, 2, 32): channels last
    assert (z[..., [1, 3]] == 0).all() and (z[..., 0] != 0).any()
    with ablate(tiny_swin, {"features.5": [1, 3]}, keep=True), torch.no_grad():
        h = tiny_swin.features[6].register_forward_pre_hook(lambda _m, args: seen.update(z=args[0].clone()))
        tiny_swin(x)
        h.remove()
    assert (seen["z"][..., 0] == 0).all() and (seen["z"][..., 1] != 0).any()
