"""Batch norms folded into the convolutions that feed them, for plain forward passes.

In eval mode a ``BatchNorm2d`` is a fixed affine map per channel, so a ``Conv2d`` whose only reader
is that batch norm equals one convolution with rescaled weights and a bias
(``torch.nn.utils.fusion.fuse_conv_bn_eval``). The readout pass runs the whole network once per
patch; folding saves the batch norms' full read and write of every convolution output, 14% of a
ResNet-50 forward at 224 px on two CPU threads (docs/speed.md). The numbers equal the model's up to
float rounding.

The folding is done on a copy: the model the caller handed in is never changed, and Integrated
Gradients keep running on it (the block-gradient shortcuts and the IG blocks see the graph as
written). A pair is left alone when either module is a layer the fit reads (its output would change
or vanish), when a module is called more than once, or when the convolution's output has another
reader; a model that torch.fx cannot trace is not folded at all.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def foldable_pairs(model: nn.Module, keep: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(conv name, batch-norm name)`` of every pair that can be folded without changing the
    output of ``model`` or of any module named in ``keep``; ``[]`` when the model cannot be traced."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure means "fold nothing"
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules[node.target]) is not nn.Conv2d or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_module" or type(modules[user.target]) is not nn.BatchNorm2d:
            continue
        conv_name, bn_name = node.target, user.target
        bn = modules[bn_name]
        if (calls[conv_name] > 1 or calls[bn_name] > 1 or conv_name in keep or bn_name in keep
                or bn.training or bn.running_mean is None or user.args != (node,) or user.kwargs):
            continue
        pairs.append((conv_name, bn_name))
    return pairs


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def folded_copy(model: nn.Module, keep: Collection[str] = ()) -> nn.Module | None:
    """A copy of ``model`` (eval mode) with every :func:`foldable_pairs` pair folded: the convolution
    replaced by the fused one (in the weights' memory format), the batch norm by ``nn.Identity`` under
    the same name; ``None`` when nothing can be folded (no copy is made)."""
    pairs = foldable_pairs(model, keep)
    if not pairs:
        return None
    folded = copy.deepcopy(model)
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        fused = fuse_conv_bn_eval(conv, folded.get_submodule(bn_name))
        if conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous():
            fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)
        _replace(folded, conv_name, fused)
        _replace(folded, bn_name, nn.Identity())
    return folded
