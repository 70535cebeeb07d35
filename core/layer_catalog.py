"""What a model offers to NeurFlow: its readable layers, and the candidates of a default layer list.

Both come from one probe of the model (:func:`neurflow.core.layer_access.probe_layers`): a layer is
*readable* when it runs once per forward pass and outputs a map, a token sequence or a vector in a
known layout. The *candidates* (:func:`deep_layers`) are the paper's kind of list, from the output
down (the order ``layers`` takes): the classifier, every block of the last stage (last first), then
the last block of each earlier stage. :mod:`neurflow.core.layer_budget` keeps the longest prefix of
them that fits a time budget: that is the suggested list (``--suggest``, ``"layers": "auto"``).

* the classifier is the innermost module that outputs the model's logits;
* a *block* is a readable map/token output of a module held in a container (``nn.Sequential``,
  ``nn.ModuleList``, ``nn.ModuleDict``) and not inside another block nor in the classifier's
  container: ResNet's ``layer1.0``, VGG's ``features.4``, Swin's ``features.3``. A *stage* is one spatial resolution; its last block is named by its outermost
  enclosing module that outputs the same tensor (``layer1`` rather than ``layer1.1``);
* token models (ViTs) keep one resolution throughout, so their one stage is sampled instead: the
  blocks at 1/2, 3/4 and all of the depth.
"""

from __future__ import annotations

import msgspec
import torch
from torch import nn

from .layer_access import LayerProbe, probe_layers

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
#: fractions of a token model's depth whose blocks are suggested (the last block always is)
TOKEN_DEPTHS = (1.0, 0.75, 0.5)


class LayerRow(msgspec.Struct, frozen=True):
    """One readable layer: its module name, output shape in the canonical layout (one sample) and
    native layout ("CHW", "HWC" channels-last, "TC" tokens, "CL" sequence, "C" vector)."""

    name: str
    shape: tuple[int, ...]
    layout: str


def _example(model: nn.Module, input_size: int, channels: int) -> torch.Tensor:
    params = next(iter(model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    return torch.zeros(1, channels, input_size, input_size, device=device)


def probe_model(model: nn.Module, input_size: int, channels: int = 3) -> dict[str, LayerProbe]:
    """Every named module's probe, in definition order (the model is put in eval mode)."""
    return probe_layers(model.eval(), _example(model, input_size, channels))


def readable_layers(probes: dict[str, LayerProbe]) -> list[LayerRow]:
    """Readable layers in the order their first call finishes."""
    ok = sorted((p for p in probes.values() if p.problem is None), key=lambda p: p.order)
    return [LayerRow(p.name, tuple(int(d) for d in p.canonical_shape), p.layout) for p in ok]


def _stages(model: nn.Module, probes: dict[str, LayerProbe]) -> tuple[LayerProbe, list[list[LayerProbe]], dict]:
    """The classifier, the blocks grouped by stage (stages and blocks in forward order; a token model
    is one stage of the sampled blocks), and the readable probes."""
    readable = {n: p for n, p in probes.items() if p.problem is None}
    if not readable:
        raise ValueError("the model has no readable layer")
    modules = dict(model.named_modules())
    last = max(readable.values(), key=lambda p: p.order)
    final = [p for p in readable.values() if p.output_id == last.output_id]
    classifier = max(final, key=lambda p: p.name.count("."))  # the innermost one: "fc", "heads.head"

    head = classifier.name.split(".")[0] if "." in classifier.name else None
    candidates = {n for n, p in readable.items()
                  if p is not classifier and len(p.canonical_shape) >= 2 and _in_container(n, modules)
                  and p.order < classifier.order and n.split(".")[0] != head}
    # a block inside a block (MobileNet's expansion conv in features.14.conv) is not a stage output
    blocks = [readable[n] for n in candidates if not any(a in candidates for a in _ancestors(n))]
    maps = [p for p in blocks if p.layout != "TC"]
    if maps:
        by_size: dict[tuple[int, ...], list[LayerProbe]] = {}
        for p in sorted(maps, key=lambda p: p.order):
            by_size.setdefault(tuple(p.canonical_shape[1:]), []).append(p)
        stages = sorted(by_size.values(), key=lambda stage: stage[-1].order)
    else:
        tokens = sorted(blocks, key=lambda p: p.order)
        picks = {max(0, round(f * len(tokens)) - 1) for f in TOKEN_DEPTHS} if tokens else set()
        stages = [[tokens[i] for i in sorted(picks)]] if tokens else []
    return classifier, stages, readable


def _names(chosen: list[LayerProbe], readable: dict[str, LayerProbe]) -> list[str]:
    """Module names of ``chosen`` (forward order in, the same order out), each the outermost module with
    the same output that holds none of the others."""
    others = {p.name for p in chosen}
    return [_outermost(p, readable, others - {p.name}) for p in chosen]


def deep_layers(model: nn.Module, probes: dict[str, LayerProbe]) -> list[str]:
    """The candidates of a layer list within a time budget, from the output down: the classifier, every
    block of the last stage (last first), then the last block of each earlier stage (the paper's
    ResNet-50 layers: ``fc, layer4.2, layer4.1, layer4.0, layer3, layer2, layer1``). A budget keeps the
    longest prefix that fits (:mod:`neurflow.core.layer_budget`)."""
    classifier, stages, readable = _stages(model, probes)
    chosen = [p for stage in stages[:-1] for p in stage[-1:]] + (stages[-1] if stages else [])
    return [classifier.name] + list(dict.fromkeys(reversed(_names(chosen, readable))))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _in_container(name: str, modules: dict[str, nn.Module]) -> bool:
    return isinstance(modules.get(name.rpartition(".")[0]), _CONTAINERS)  # "" (the model) for top-level names


def _outermost(p: LayerProbe, readable: dict[str, LayerProbe], others: set[str]) -> str:
    """The shallowest enclosing module whose output is the same tensor (``layer1`` for ``layer1.1``)
    and that holds none of the ``others`` (layers may not contain each other)."""
    best = p.name
    parts = p.name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        parent = readable.get(".".join(parts[:k]))
        if parent is None or parent.output_id != p.output_id or any(o.startswith(parent.name + ".") for o in others):
            break
        best = parent.name
    return best
