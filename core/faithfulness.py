"""Faithfulness of a circuit, measured by ablation on the model itself.

(a) ``group_ablation``: zero a group's neurons and compare the effect on the target logit and on the
    activation of the upper group it feeds most with zeroing random neuron sets of equal size;
(b) ``edge_correlation``: do group-edge weights predict the measured effects (Pearson, Spearman)?
(c) ``fidelity_curves``: the paper's masking / retaining curves per layer, core neurons vs random
    neurons, single-layer and multi-layer: the fraction of images still predicted as the target.

All use full images (the circuit's selected images), masking = zeroing whole channels.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn

from .ablation import ablate, batched_logits
from .circuit import Circuit
from .experiments.fidelity import fidelity_curves as experiment_fidelity
from .images import ImageSet
from .layer_access import LayerAccess, num_channels


def _pixels(images: ImageSet | torch.Tensor) -> torch.Tensor:
    return images.pixels if isinstance(images, ImageSet) else images


def _access(model: nn.Module, circuit: Circuit) -> LayerAccess:
    return LayerAccess(model.eval(), [lay.name for lay in circuit.layers], circuit.params.token_reduce)


def _neurons_by_group(circuit: Circuit) -> dict[str, list[int]]:
    return {g.id: sorted({m.neuron for m in g.members}) for _, _, g in circuit.iter_groups()}


def _upper_activation(access: LayerAccess, model: nn.Module, pixels: torch.Tensor, layer: str,
                      neurons: list[int], ablation: dict[str, list[int]]) -> float:
    with ablate(model, ablation), torch.no_grad():
        acts = access.readouts(pixels, [layer])[layer]
    return float(acts[:, neurons].mean())


def group_ablation(model: nn.Module, circuit: Circuit, images: ImageSet | torch.Tensor, n_random: int = 10,
                   seed: int = 0) -> dict:
    """Per group below the class layer: effect of ablating it vs random sets of the same size."""
    pixels, access = _pixels(images), _access(model, circuit)
    rng = np.random.default_rng(seed)
    target = circuit.target.class_index
    names = [lay.name for lay in circuit.layers]
    base_logit = float(batched_logits(model, pixels, output=circuit.params.output)[:, target].mean())
    groups = _neurons_by_group(circuit)
    strongest: dict[str, tuple[str, float]] = {}
    for e in circuit.group_edges:
        if e.target not in strongest or e.weight > strongest[e.target][1]:
            strongest[e.target] = (e.source, e.weight)
    rows = []
    baseline_acts: dict[str, float] = {}
    for li in range(1, len(circuit.layers)):
        layer = circuit.layers[li]
        channels = num_channels(layer.shape)
        upper_name = names[li - 1]
        for g in layer.groups:
            neurons = groups[g.id]
            upper = strongest.get(g.id)
            upper_neurons = groups[upper[0]] if upper else None

            def effects(chans: list[int]) -> tuple[float, float | None]:
                with ablate(model, {layer.name: chans}):
                    logit = float(batched_logits(model, pixels, output=circuit.params.output)[:, target].mean()) - base_logit
                act = None
                if upper_neurons:
                    act = _upper_activation(access, model, pixels, upper_name, upper_neurons, {layer.name: chans})
                return logit, act

            logit_effect, act_after = effects(neurons)
            act_before = None
            if upper_neurons:
                if upper[0] not in baseline_acts:
                    baseline_acts[upper[0]] = _upper_activation(access, model, pixels, upper_name, upper_neurons, {})
                act_before = baseline_acts[upper[0]]
            random_logit, random_act = [], []
            for _ in range(n_random):
                chans = sorted(rng.choice(channels, size=len(neurons), replace=False).tolist())
                rl, ra = effects(chans)
                random_logit.append(rl)
                if ra is not None:
                    random_act.append(ra - act_before)
            rows.append({
                "group": g.id, "layer": layer.name, "size": len(neurons), "upper_group": upper[0] if upper else None,
                "logit_change": logit_effect, "random_logit_change_mean": float(np.mean(random_logit)),
                "random_logit_change_std": float(np.std(random_logit)),
                "upper_activation_change": None if act_after is None else act_after - act_before,
                "random_upper_activation_change_mean": float(np.mean(random_act)) if random_act else None,
                # Fraction of random sets whose logit drop is at least as large as the group's.
                "logit_p_value": float((1 + sum(r <= logit_effect for r in random_logit)) / (1 + n_random)),
            })
    return {"base_logit": base_logit, "groups": rows}


def edge_correlation(model: nn.Module, circuit: Circuit, images: ImageSet | torch.Tensor) -> dict:
    """Correlation between group-edge weights W(U, G) and the measured drop of U's activation when G
    is ablated, over all edges of the circuit."""
    pixels, access = _pixels(images), _access(model, circuit)
    names = [lay.name for lay in circuit.layers]
    groups = _neurons_by_group(circuit)
    layer_of = {g.id: li for li, _, g in circuit.iter_groups()}
    before: dict[str, float] = {}
    weights, effects = [], []
    for e in circuit.group_edges:
        upper_layer = names[layer_of[e.source]]
        lower_layer = names[layer_of[e.target]]
        if e.source not in before:
            before[e.source] = _upper_activation(access, model, pixels, upper_layer, groups[e.source], {})
        after = _upper_activation(access, model, pixels, upper_layer, groups[e.source], {lower_layer: groups[e.target]})
        weights.append(e.weight)
        effects.append(before[e.source] - after)  # drop in the upper group's activation
    out = {"n_edges": len(weights)}
    if len(weights) >= 3 and np.std(weights) > 0 and np.std(effects) > 0:
        out["pearson"] = float(pearsonr(weights, effects)[0])
        out["spearman"] = float(spearmanr(weights, effects)[0])
    return out


def fidelity_curves(model: nn.Module, circuit: Circuit, images: ImageSet | torch.Tensor, n_random: int = 5,
                    seed: int = 0) -> dict:
    """Accuracy (fraction predicted as the target) when masking / retaining core neurons, per layer
    (see :mod:`core.experiments.fidelity`, which also runs over classes and taus)."""
    pixels = _pixels(images)
    found = experiment_fidelity(model, circuit, pixels, circuit.target.class_index, n_random,
                                np.random.default_rng(seed))
    curves = {f"{c.mode}_{c.operation}": [{"layer": p.layer, "core": p.core_accuracy, "random_mean": p.random_accuracy,
                                           "random_std": p.random_accuracy_std} for p in c.points] for c in found}
    return {"n_images": int(len(pixels)), "curves": curves}


def faithfulness_report(model: nn.Module, circuit: Circuit, images: ImageSet | torch.Tensor, n_random: int = 10,
                        seed: int = 0) -> dict:
    return {
        "group_ablation": group_ablation(model, circuit, images, n_random, seed),
        "edge_correlation": edge_correlation(model, circuit, images),
        "fidelity": fidelity_curves(model, circuit, images, max(2, n_random // 2), seed),
    }
