"""Importance of every lower channel for one upper neuron on its top-N patches, by several methods.

Importance of channel c = sum over the patches of |spatial mean of the attribution map of c| (the
reference's correlation experiment; proportional to NeurFlow's ranking score for IG). The engine's
own Integrated Gradients and a no-gradient control (the channel's mean activation) always run;
captum's methods run when captum is importable (it is a dev dependency) and are otherwise skipped
with a note, as is any captum method that fails on the model (e.g. LRP on residual additions).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..block_gradients import fast_block_gradients
from ..integrated_gradients import multi_target_ig
from ..layer_access import Block, channel_mean, readout
from .spec import CAPTUM_METHODS


class _NeuronReadout(nn.Module):
    """z -> upper readouts, as an ``nn.Module`` for captum. The model is registered as a submodule
    so that hook-based methods (guided backprop) find the activation modules the block runs."""

    def __init__(self, block: Block, model: nn.Module, token_reduce: str):
        super().__init__()
        self.block = block
        self.model = model
        self.token_reduce = token_reduce

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return readout(self.block(z), self.token_reduce)


def _captum_method(name: str, module: nn.Module, neuron: int, ig_steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import captum.attr as ca

    if name == "saliency":
        return lambda z: ca.Saliency(module).attribute(z, target=neuron)
    if name == "input_x_gradient":
        return lambda z: ca.InputXGradient(module).attribute(z, target=neuron)
    if name == "guided_backprop":
        return lambda z: ca.GuidedBackprop(module).attribute(z, target=neuron)
    if name == "gradient_shap":  # the reference: zero baseline, 50 samples
        return lambda z: ca.GradientShap(module).attribute(z, baselines=torch.zeros_like(z[:1]), n_samples=50,
                                                            target=neuron)
    if name == "smoothgrad":  # the reference: NoiseTunnel over IG, captum's defaults (5 samples, stdev 1)
        return lambda z: ca.NoiseTunnel(ca.IntegratedGradients(module)).attribute(
            z, nt_type="smoothgrad", nt_samples=5, stdevs=1.0, target=neuron, n_steps=ig_steps)
    if name == "lrp":
        return lambda z: ca.LRP(module).attribute(z, target=neuron)
    raise ValueError(f"unknown attribution method {name!r}")


def captum_available() -> bool:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return False
    return True


def channel_importance(block: Block, model: nn.Module, maps: torch.Tensor, neuron: int, methods: Sequence[str],
                       ig_steps: int, token_reduce: str = "mean", x: torch.Tensor | None = None,
                       batch_size: int = 16, seed: int = 0) -> tuple[dict[str, np.ndarray], list[str]]:
    """``{method: importance (C_lower,)}`` for the methods that ran, and a note for each skipped one."""
    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    have_captum = None
    for name in methods:
        if name == "activation":
            out[name] = channel_mean(maps).abs().sum(0).double().numpy()
            continue
        if name == "integrated_gradients":
            total = 0
            with fast_block_gradients(model):
                for s in range(0, len(maps), batch_size):
                    z = maps[s:s + batch_size]
                    xs = x[s:s + batch_size] if x is not None else None
                    rows = multi_target_ig(block, z, [[neuron]] * len(z), ig_steps, token_reduce, x=xs)
                    total = total + torch.stack([r[0] for r in rows]).abs().sum(0)
            out[name] = total.double().cpu().numpy()
            continue
        if name not in CAPTUM_METHODS:
            raise ValueError(f"unknown attribution method {name!r}")
        if have_captum is None:
            have_captum = captum_available()
        if not have_captum:
            notes.append(f"{name}: skipped, captum is not installed (pip install captum)")
            continue
        if block.needs_input:
            notes.append(f"{name}: skipped, the block between these layers re-runs the whole model")
            continue
        attribute = _captum_method(name, _NeuronReadout(block, model, token_reduce), neuron, ig_steps)
        torch.manual_seed(seed)
        try:
            total = 0
            for s in range(0, len(maps), batch_size):
                z = maps[s:s + batch_size].clone().requires_grad_(True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # captum's notes on hooks it sets and removes
                    attr = attribute(z)
                total = total + channel_mean(attr.detach()).abs().sum(0)
            out[name] = total.double().cpu().numpy()
        except Exception as exc:  # noqa: BLE001 - a method that cannot handle this model is skipped, said why
            notes.append(f"{name}: skipped, captum failed on this block ({type(exc).__name__}: {str(exc)[:160]})")
    return out, notes
