"""The architecture matrix (docs/architectures.md): for each family, at 32 px with random weights and
small widths, ``neurflow layers`` lists only readable layers, the candidates of the suggested layer
list are the classifier, the blocks of the last stage and the last block of each earlier stage
(``layer_catalog.deep_layers``), a fast-preset fit on all of them succeeds, and the IG of one
neuron per block equals captum's on the model's own tensors."""

from __future__ import annotations

from collections import Counter

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, densenet, efficientnet, regnet, resnet, swin_transformer, vgg

from neurflow.core.block_gradients import fast_block_gradients
from neurflow.core.engine import NeurFlow
from neurflow.core.integrated_gradients import multi_target_ig
from neurflow.core.layer_access import LayerAccess, readout, to_canonical
from neurflow.core.layer_catalog import deep_layers, probe_model, readable_layers

from .captum_reference import captum_native, position_dims

SIZE = 32


def small_vgg() -> nn.Module:
    with torch.device("meta"):  # VGG's 4096-wide classifier: built on meta, replaced below
        model = torchvision.models.vgg11(num_classes=5)
    model.features = vgg.make_layers([16, "M", 32, "M", 64, 64, "M"])
    model.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 5))
    return model


#: family -> (constructor, the candidates of the suggested layer list)
FAMILIES = {
    "resnet-basic": (lambda: resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=5),
                     ["fc", "layer4", "layer3", "layer2", "layer1"]),
    "resnet-bottleneck": (lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], num_classes=5, width_per_group=16),
                          ["fc", "layer4", "layer3", "layer2", "layer1"]),
    "vgg": (small_vgg, ["classifier.6", "features.10", "features.9", "features.4", "features.1"]),
    "mobilenet-v2": (lambda: torchvision.models.mobilenet_v2(num_classes=5, width_mult=0.25),
                     ["classifier.1", "features.18", "features.17", "features.16", "features.15", "features.14",
                      "features.13", "features.6", "features.3", "features.1"]),
    "mobilenet-v3": (lambda: torchvision.models.mobilenet_v3_small(num_classes=5, width_mult=0.25),
                     ["classifier.3", "features.12", "features.11", "features.10", "features.9", "features.8",
                      "features.3", "features.1", "features.0"]),
    "efficientnet": (lambda: efficientnet.EfficientNet(
        efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.5)[0], dropout=0.2,
        num_classes=5),
                     ["classifier.1", "features.8", "features.7", "features.6", "features.5", "features.3", "features.2",
                      "features.1"]),
    "densenet": (lambda: densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16,
                                           num_classes=5),
                 ["classifier", "features.norm5", "features.denseblock4", "features.transition3", "features.denseblock3",
                  "features.denseblock2", "features.denseblock1", "features.relu0"]),
    "convnext": (lambda: convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, 64, 1),
                                            convnext.CNBlockConfig(64, 128, 1), convnext.CNBlockConfig(128, None, 1)],
                                           num_classes=5),
                 ["classifier.2", "features.7", "features.6", "features.5", "features.3", "features.1"]),
    "swin": (lambda: swin_transformer.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1, 1, 1],
                                                      num_heads=[1, 1, 1, 1], window_size=[2, 2], num_classes=5),
             ["head", "features.7", "features.6", "features.5", "features.3", "features.1"]),
    "regnet": (lambda: regnet.RegNet(regnet.BlockParams.from_init_params(depth=4, w_0=16, w_a=8, w_m=2, group_width=8),
                                     num_classes=5, stem_width=16),
               ["fc", "trunk_output.block2", "trunk_output.block1", "stem"]),
    "torchvision-vit": (lambda: torchvision.models.VisionTransformer(image_size=SIZE, patch_size=8, num_layers=4,
                                                                     num_heads=2, hidden_dim=16, mlp_dim=32,
                                                                     num_classes=5),
                        ["heads.head", "encoder.layers.encoder_layer_3", "encoder.layers.encoder_layer_2",
                         "encoder.layers.encoder_layer_1"]),
    "timm-vit": (lambda: timm.create_model("vit_tiny_patch16_224", img_size=SIZE, patch_size=8, depth=4,
                                           embed_dim=32, num_heads=2, num_classes=5),
                 ["head", "blocks.3", "blocks.2", "blocks.1"]),
    "timm-deit": (lambda: timm.create_model("deit_tiny_patch16_224", img_size=SIZE, patch_size=8, depth=4,
                                            embed_dim=32, num_heads=2, num_classes=5),
                  ["head", "blocks.3", "blocks.2", "blocks.1"]),
}


def build(family: str) -> nn.Module:
    torch.manual_seed(0)
    model = FAMILIES[family][0]().eval()
    if family == "torchvision-vit":  # torchvision zero-initialises the head: every gradient would be 0
        nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def call_counts(model: nn.Module, x: torch.Tensor) -> Counter:
    counts: Counter = Counter()
    handles = [m.register_forward_hook(lambda _m, _i, _o, n=n: counts.update([n]))
               for n, m in model.named_modules() if n]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return counts


@pytest.mark.parametrize("family", list(FAMILIES))
def test_architecture(family):
    model = build(family)
    torch.manual_seed(1)
    x = torch.randn(4, 3, SIZE, SIZE)

    # `neurflow layers`: every listed layer runs exactly once and outputs a tensor
    probes = probe_model(model, SIZE)
    rows = readable_layers(probes)
    counts = call_counts(model, x[:1])
    assert rows and all(counts[r.name] == 1 for r in rows)
    shared = {n for n, c in counts.items() if c > 1}
    assert not shared & {r.name for r in rows}

    # the candidates of the suggested list, from the output down
    layers = deep_layers(model, probes)
    assert layers == FAMILIES[family][1]

    # a fast-preset fit on a few images
    circuit = NeurFlow(layers, tau=2, top_n=4, granularities=[1.0], select="all", preset="fast",
                       n_groups=2, max_concepts=2).fit(model, x, 0).circuit_
    assert [lay.name for lay in circuit.layers] == layers
    assert all(lay.neurons for lay in circuit.layers[:-1])

    # one neuron per block: the engine's IG (with its shortcuts) against captum on native tensors
    access = LayerAccess(model, layers)
    access.probe(x)
    one = x[:1]
    for upper, lower in zip(layers, layers[1:]):
        z = access.full_output(one, lower)
        block = access.block(lower, upper)
        with torch.no_grad():
            target = int(readout(block(z.clone(), one)).abs().mean(0).argmax())
        with fast_block_gradients(model):
            ours = multi_target_ig(block, z, [[target]], steps=8, x=one, reduce=False)[0][0].unsqueeze(0)
        ref, _ = captum_native(model, lower, upper, one, target, 8, position_dims(access.layouts[upper]))
        ref = to_canonical(ref, access.layouts[lower])
        scale = float(ref.abs().max())
        assert scale > 0, (family, upper, lower)
        torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-4 * scale, msg=f"{family}: {lower} -> {upper}")
