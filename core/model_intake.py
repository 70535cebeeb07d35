"""Model intake: architecture name + safetensors state_dict -> an eval-mode ``nn.Module``.

Only safetensors are accepted for weight files: they hold tensors and nothing else, so loading a
user's file never runs code. Published weights are named instead (``IMAGENET1K_V2``, a timm tag; see
:mod:`neurflow.core.pretrained`). Architecture names are ``torchvision:<name>`` (or a bare torchvision name)
and ``timm:<name>`` (when timm is installed). Library users may also pass a built module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .arch_names import split_arch
from .hashing import sha256_file  # noqa: F401  (re-exported: model ids are weight hashes)
from .layer_access import did_you_mean
from .layer_catalog import probe_model, readable_layers


def build_architecture(arch: str, num_classes: int) -> nn.Module:
    """An untrained instance of ``arch`` with ``num_classes`` outputs."""
    family, name = split_arch(arch)
    if family == "torchvision":
        import torchvision

        available = torchvision.models.list_models()
        if name not in available:
            raise ValueError(did_you_mean(name, available, "torchvision architecture name")
                             + " (torchvision.models.list_models() lists them)")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    try:
        import timm
    except ImportError:
        raise ValueError("timm architectures need the 'timm' extra: pip install 'neurflow[timm]'") from None
    if not timm.is_model(name):
        raise ValueError(did_you_mean(name, timm.list_models(), "timm architecture name") + " (timm.list_models() lists them)")
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """None if ``state`` fits ``model`` exactly, else a message naming every conflict."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs architecture {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    if missing and unexpected and all(k.startswith("module.") for k in unexpected) and \
            {k[len("module."):] for k in unexpected} >= set(missing):
        return ("every key starts with 'module.' (a state_dict saved from nn.DataParallel or "
                "DistributedDataParallel); save model.module.state_dict() instead, or strip the prefix: "
                "{k.removeprefix('module.'): v for k, v in state.items()}")

    def show(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected)}")
    if shapes:
        parts.append(f"shape conflicts: {show(shapes)}")
    return "; ".join(parts)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights must be a .safetensors file (got {path.name}); pickled .pt/.pth files are not accepted")
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read safetensors file {path.name}: {exc}") from None


def load_model(arch: str, weights: str | Path | None, num_classes: int) -> nn.Module:
    """Build ``arch`` and load ``weights`` strictly; the model is returned in eval mode. ``weights``:
    a .safetensors file, a published-weights name (:mod:`neurflow.core.pretrained`), or None."""
    from .pretrained import is_pretrained_tag, load_pretrained

    if is_pretrained_tag(weights):
        return load_pretrained(arch, str(weights), num_classes)[0]
    model = build_architecture(arch, num_classes)
    if weights is not None:
        state = read_safetensors(weights)
        problem = describe_mismatch(model, state)
        if problem:
            raise ValueError(f"weights {Path(weights).name} do not fit {arch} with {num_classes} classes: {problem}")
        model.load_state_dict(state, strict=True)
    return model.eval()


def list_layers(model: nn.Module, input_size: int, channels: int = 3) -> list[tuple[str, tuple[int, ...]]]:
    """Readable layer names (module names) with the output shape of one sample in the canonical layout
    (channels first for maps), in forward order. Shared modules (run more than once per forward pass)
    and outputs that are not tensors are left out: NeurFlow cannot read them."""
    return [(row.name, row.shape) for row in readable_layers(probe_model(model, input_size, channels))]
