"""The NeurFlow estimator: ``NeurFlow(...).fit(model, images, target_class) -> Circuit``.

Top-down, for each pair (upper layer, the layer below it) in ``layers`` (ordered from the output
down): take every core neuron of the upper layer, its top-N patches, the Integrated Gradients of the
neuron w.r.t. the lower layer on those patches, keep the top-tau lower channels by mean |IG| as core
neurons of the lower layer, and cluster the neuron's top patches into concepts. Then group the
concepts of each layer and weigh the edges between groups. See README "Method" for the choices
made where the paper and the reference code disagree.

Memory: patches are generated and streamed in batches from the selected images; only the neuron
readouts (patches x channels) of each layer are held, never full activation maps of every patch.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .circuit import SCHEMA_VERSION, Circuit, Concept, Edge, Exemplar, ImageRef, Layer, ModelInfo, Neuron, Target
from .clustering import ward_silhouette
from .edge_weights import l1_normalise, reference_rescale
from .groups import build_groups, group_edges
from .images import ImageSet
from .integrated_gradients import multi_target_ig
from .layer_access import LayerAccess, readout, zero_channels
from .memory import mmap_large_allocations, release_free_memory
from .block_gradients import fast_block_gradients
from .patches import PatchIndex, build_index, make_patches
from neurflow.progress import Progress

log = logging.getLogger(__name__)



class FewPatchesWarning(UserWarning):
    """Fewer patches than ``top_n``: every patch is used."""


@dataclass
class _LayerFit:
    """What fitting one upper layer yields for the layer below."""

    neurons: list[Neuron]
    next_neurons: list[int]
    importance: dict[int, float]


class NeurFlow:
    """Find, cluster and connect the core neurons of ``layers`` for one target class.

    Parameters
    ----------
    layers: module names ordered from the output down. ``layers[0]`` holds the target class neuron
        (usually the classifier); the last layer is only the IG input space of the one above it.
    tau: core neurons kept per upper neuron (capped at the lower layer's channel count).
    top_n: top-activating patches per neuron (the concept support).
    granularities, stride_ratio: patch sizes as fractions of the input side, and stride / size.
    ig_steps: Gauss-Legendre quadrature steps of Integrated Gradients.
    seed: seeds torch and numpy (the fit itself is deterministic on CPU; the seed covers ties in
        library code and future randomised options).
    reference_compat: reproduce the reference implementation's documented behaviours (its
        order-dependent edge rescale; never one concept per neuron) for number-for-number comparison.
    select: ``"predicted"`` keeps images the model predicts as the target (the reference's choice);
        ``"all"`` keeps every image.
    max_images: keep at most this many of the selected images (the first in the given order).
    acceptable_error_range: >= 0 enables the reference's pruning of each tau list (top-N overlap after
        cumulative masking); negative disables it (the reference's run setting).
    max_concepts: most concepts per neuron (silhouette over 2..max_concepts).
    allow_single_concept: let a neuron have one concept when its patches show no cluster structure.
    n_exemplars: exemplar patches stored per concept and per group.
    n_groups: groups per layer: None (silhouette), an int for all layers, or {layer name: int}.
    max_groups: upper bound of the silhouette search for groups.
    token_reduce: neuron readout of (B, T, C) token layers: ``"mean"`` over tokens or ``"cls"`` token.
    batch_size: patches per Integrated-Gradients chunk (each is expanded ig_steps times).
    forward_batch_size: patches per plain forward pass (small batches keep the peak memory of the
        streamed activation pass low; larger ones are not faster on CPU).
    device: torch device for the computation.
    low_memory: on Linux/glibc, serve allocations over 2 MB with their own mappings from the first fit
        on (process-wide), so that freed IG temporaries are returned at once: a peak near the live
        memory, for about a third more wall time on CPU (see :mod:`core.memory`).
    progress: callback ``(stage, done, total)``.
    """

    def __init__(
        self,
        layers: Sequence[str],
        tau: int = 16,
        top_n: int = 50,
        granularities: Sequence[float] = (1.0, 0.5, 0.25),
        stride_ratio: float = 0.5,
        ig_steps: int = 50,
        seed: int = 0,
        reference_compat: bool = False,
        select: str = "predicted",
        max_images: int | None = None,
        acceptable_error_range: float = -1.0,
        max_concepts: int = 5,
        allow_single_concept: bool = False,
        n_exemplars: int = 5,
        n_groups: int | dict[str, int] | None = None,
        max_groups: int = 100,
        token_reduce: str = "mean",
        batch_size: int = 8,
        forward_batch_size: int = 32,
        device: str = "cpu",
        low_memory: bool = True,
        progress: Progress | None = None,
    ):
        self.layers = list(layers)
        self.tau = tau
        self.top_n = top_n
        self.granularities = tuple(float(g) for g in granularities)
        self.stride_ratio = stride_ratio
        self.ig_steps = ig_steps
        self.seed = seed
        self.reference_compat = reference_compat
        self.select = select
        self.max_images = max_images
        self.acceptable_error_range = acceptable_error_range
        self.max_concepts = max_concepts
        self.allow_single_concept = allow_single_concept
        self.n_exemplars = n_exemplars
        self.n_groups = n_groups
        self.max_groups = max_groups
        self.token_reduce = token_reduce
        self.batch_size = batch_size
        self.forward_batch_size = forward_batch_size
        self.device = device
        self.low_memory = low_memory
        self.progress = progress
        self._check_params()

    # -- parameters ------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if len(self.layers) < 2:
            raise ValueError("layers needs at least two names: the target layer and one below it")
        if self.select not in ("predicted", "all"):
            raise ValueError(f"select must be 'predicted' or 'all', got {self.select!r}")
        if self.token_reduce not in ("mean", "cls"):
            raise ValueError(f"token_reduce must be 'mean' or 'cls', got {self.token_reduce!r}")
        for name, value in (("tau", self.tau), ("top_n", self.top_n), ("ig_steps", self.ig_steps),
                            ("batch_size", self.batch_size), ("n_exemplars", self.n_exemplars)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.granularities or not all(0 < g <= 1 for g in self.granularities):
            raise ValueError(f"granularities must be fractions in (0, 1], got {self.granularities}")
        if not 0 < self.stride_ratio <= 1:
            raise ValueError(f"stride_ratio must be in (0, 1], got {self.stride_ratio}")
        if self.max_images is not None and (not isinstance(self.max_images, int) or self.max_images < 1):
            raise ValueError(f"max_images must be a positive integer or None, got {self.max_images!r}")
        if self.max_concepts < 2:
            raise ValueError("max_concepts must be at least 2")

    def get_params(self) -> dict[str, Any]:
        return {
            "layers": self.layers, "tau": self.tau, "top_n": self.top_n,
            "granularities": list(self.granularities), "stride_ratio": self.stride_ratio,
            "ig_steps": self.ig_steps, "ig_method": "gausslegendre", "ig_baseline": "zero",
            "seed": self.seed, "reference_compat": self.reference_compat, "select": self.select,
            "max_images": self.max_images,
            "acceptable_error_range": self.acceptable_error_range, "max_concepts": self.max_concepts,
            "allow_single_concept": self.allow_single_concept, "n_exemplars": self.n_exemplars,
            "n_groups": self.n_groups, "max_groups": self.max_groups, "token_reduce": self.token_reduce,
            "edge_normalisation": "reference" if self.reference_compat else "l1",
            "batch_size": self.batch_size, "forward_batch_size": self.forward_batch_size,
            "low_memory": self.low_memory,
        }

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(stage, done, total)

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, model: nn.Module, images: ImageSet | torch.Tensor, target_class: int,
            model_info: ModelInfo | None = None, target_name: str | None = None,
            logits: torch.Tensor | None = None) -> Circuit:
        """Fit the circuit of ``target_class``. ``logits``: the model's outputs on ``images`` when the
        caller already has them (one forward pass shared by several target classes)."""
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        if self.low_memory:
            mmap_large_allocations()
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        model = model.eval().to(self.device)
        if isinstance(images, torch.Tensor):
            images = ImageSet.from_tensor(images)
        access = LayerAccess(model, self.layers, self.token_reduce)
        shapes = self._check_layer_order(access, images)

        if logits is None:
            logits = self.predict_logits(model, images)
        selected = self._select_images(logits, images, target_class)
        pixels = selected.pixels.to(self.device)
        index = build_index(len(selected), selected.input_size, self.granularities, self.stride_ratio)
        timings["select"] = time.perf_counter() - clock

        clock = time.perf_counter()
        acts = self._readouts(access, pixels, index)
        timings["activations"] = time.perf_counter() - clock
        if len(index) < self.top_n:
            warnings.warn(f"only {len(index)} patches for top_n={self.top_n}; using all of them", FewPatchesWarning,
                          stacklevel=2)

        layers: list[Layer] = []
        current = [int(target_class)]
        importance = {int(target_class): 1.0}
        for u in range(len(self.layers) - 1):
            clock = time.perf_counter()
            fit = self._fit_layer(access, u, current, importance, acts, pixels, index, selected)
            layers.append(Layer(name=self.layers[u], shape=list(shapes[self.layers[u]]), neurons=fit.neurons, groups=[]))
            current, importance = fit.next_neurons, fit.importance
            timings[f"layer:{self.layers[u]}"] = time.perf_counter() - clock
        bottom = self.layers[-1]
        layers.append(Layer(name=bottom, shape=list(shapes[bottom]), neurons=[], groups=[]))

        clock = time.perf_counter()
        edges = self._group(layers)
        timings["groups"] = time.perf_counter() - clock

        info = model_info or ModelInfo(arch=type(model).__name__, weights_sha256=None,
                                       num_classes=int(self._num_classes), input_size=images.input_size,
                                       mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
        params = self.get_params() | {"n_images": len(selected), "n_patches": len(index)}
        refs = [ImageRef(id=i, path=selected.paths[i], width=selected.sizes[i][0], height=selected.sizes[i][1])
                for i in range(len(selected))]
        return Circuit(schema=SCHEMA_VERSION, model=info, target=Target(class_index=int(target_class), name=target_name),
                       params=params, images=refs, layers=layers, group_edges=edges,
                       timings={k: round(v, 3) for k, v in timings.items()})

    def _check_layer_order(self, access: LayerAccess, images: ImageSet) -> dict[str, tuple[int, ...]]:
        with torch.no_grad():
            order, shapes = access.call_order(images.pixels[:1].to(self.device))
        missing = [n for n in self.layers if n not in shapes]
        if missing:
            raise ValueError(f"layer(s) {missing} are never called in the model's forward pass")
        if order != self.layers[::-1]:
            raise ValueError(f"layers must be ordered from the output down; the forward pass runs them as "
                             f"{order[::-1]} (output first), got {self.layers}")
        return shapes

    def predict_logits(self, model: nn.Module, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """The model's outputs on every image (float32, CPU), in batches."""
        pixels = images.pixels if isinstance(images, ImageSet) else images
        out = []
        with torch.no_grad():
            for start in range(0, len(pixels), self.forward_batch_size):
                out.append(model.eval().to(self.device)(pixels[start:start + self.forward_batch_size].to(self.device)).float().cpu())
        return torch.cat(out)

    def _select_images(self, logits: torch.Tensor, images: ImageSet, target_class: int) -> ImageSet:
        if logits.dim() != 2 or len(logits) != len(images):
            raise ValueError(f"the model output has shape {tuple(logits.shape)}; a (batch, classes) output for "
                             f"each of the {len(images)} images is expected")
        if not torch.isfinite(logits).all():
            raise ValueError("the model produces non-finite outputs on these images")
        self._num_classes = logits.shape[1]
        if not 0 <= target_class < self._num_classes:
            raise ValueError(f"target class {target_class} is out of range; the model has {self._num_classes} classes (0..{self._num_classes - 1})")
        preds = logits.argmax(dim=1)
        keep = list(range(len(images)))
        if self.select == "predicted":
            keep = torch.nonzero(preds == target_class).flatten().tolist()
        self._report("select", len(keep), len(images))
        if not keep:
            counts = torch.bincount(preds, minlength=self._num_classes).tolist()
            raise ValueError(f"no image is predicted as class {target_class}; predictions per class: "
                             f"{dict(enumerate(counts))}. Use select='all' or give images of that class")
        return images.subset(keep[: self.max_images] if self.max_images else keep)

    def _readouts(self, access: LayerAccess, pixels: torch.Tensor, index: PatchIndex) -> dict[str, torch.Tensor]:
        """Neuron readouts of every layer for every patch (float32 on CPU), one streamed pass."""
        total = len(index)
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        with torch.no_grad():
            for start in range(0, total, self.forward_batch_size):
                which = np.arange(start, min(start + self.forward_batch_size, total))
                found = access.readouts(make_patches(pixels, index, which))
                for name, value in found.items():
                    chunks[name].append(value.float().cpu())
                self._report("activations", int(which[-1]) + 1, total)
        acts = {name: torch.cat(parts) for name, parts in chunks.items()}
        for name in self.layers:
            if not torch.isfinite(acts[name]).all():
                raise ValueError(f"layer {name!r} produces non-finite activations (NaN or inf) on these images")
        return acts

    def _fit_layer(self, access, u, neurons, importance, acts, pixels, index, selected) -> _LayerFit:
        upper, lower = self.layers[u], self.layers[u + 1]
        a_up = acts[upper]
        n_top = min(self.top_n, len(index))
        top = {i: torch.topk(a_up[:, i], n_top, sorted=True).indices.numpy() for i in neurons}
        scores = self._ig_scores(access, upper, lower, top, pixels, index)

        v_low = acts[lower].double().numpy()
        n_lower = v_low.shape[1]
        tau = min(self.tau, n_lower)
        out_neurons: list[Neuron] = []
        next_importance: dict[int, float] = {}
        for i in neurons:
            s = scores[i]  # (n_top, C_lower), rows in activation order
            ranking = np.abs(s).mean(axis=0)
            chosen = np.argsort(-ranking, kind="stable")[:tau]
            if self.acceptable_error_range >= 0:
                chosen = self._prune(access, upper, lower, i, chosen, a_up, pixels, index, n_top)
            for j in chosen:
                next_importance[int(j)] = max(next_importance.get(int(j), 0.0), float(ranking[j]))
            concepts = self._concepts(i, top[i], s, chosen, v_low, a_up, index, selected)
            out_neurons.append(Neuron(id=int(i), importance=float(importance.get(i, 0.0)), concepts=concepts))
        is_last_pair = u + 1 == len(self.layers) - 1
        next_neurons = [] if is_last_pair else sorted(next_importance)
        return _LayerFit(out_neurons, next_neurons, next_importance)

    def _ig_scores(self, access, upper, lower, top, pixels, index) -> dict[int, np.ndarray]:
        """Per-channel IG scores (n_top, C_lower) of every upper core neuron on its top patches."""
        needs: dict[int, list[int]] = {}
        for i, rows in top.items():
            for p in rows:
                needs.setdefault(int(p), []).append(i)
        block = access.block(lower, upper)
        # Patches needed by many neurons first: chunks then have few empty backward rows.
        patches = sorted(needs, key=lambda p: (-len(needs[p]), p))
        found: dict[tuple[int, int], np.ndarray] = {}
        total = sum(len(t) for t in needs.values())
        done = 0
        # exact shortcuts: convolutions reading the interpolated input run once per patch, the last
        # ones skip the zero channels of a one-neuron gradient (core/block_gradients.py)
        with fast_block_gradients(access.model):
            for start in range(0, len(patches), self.batch_size):
                which = patches[start:start + self.batch_size]
                x = make_patches(pixels, index, which)
                with torch.no_grad():
                    z = access.full_output(x, lower)
                targets = [needs[p] for p in which]
                result = multi_target_ig(block, z, targets, self.ig_steps, self.token_reduce, x=x)
                for p, tlist, rows in zip(which, targets, result):
                    for t, value in zip(tlist, rows):
                        found[(t, p)] = value.double().cpu().numpy()
                done += sum(len(t) for t in targets)
                release_free_memory()  # varying-size IG tensors fragment the heap; keep RSS flat
                self._report(f"ig {upper}", done, total)
        return {i: np.stack([found[(i, int(p))] for p in rows]) for i, rows in top.items()}

    def _concepts(self, i, top_rows, s, chosen, v_low, a_up, index, selected) -> list[Concept]:
        v = v_low[top_rows]
        allow_single = self.allow_single_concept and not self.reference_compat
        labels = ward_silhouette(v, max_k=self.max_concepts, allow_single=allow_single)
        normalise = reference_rescale if self.reference_compat else l1_normalise
        concepts = []
        for k in range(int(labels.max()) + 1):
            rows = np.nonzero(labels == k)[0]  # activation order
            sub = v[rows][:, chosen]
            dist = np.linalg.norm(sub - sub.mean(axis=0), axis=1)
            nearest = np.sort(rows[np.argsort(dist, kind="stable")[: self.n_exemplars]])
            weights = normalise(s[rows][:, chosen].mean(axis=0))
            concepts.append(Concept(
                id=k,
                activation=float(a_up[top_rows[rows], i].double().mean()),
                size=int(len(rows)),
                exemplars=[self._exemplar(int(top_rows[r]), i, a_up, index, selected) for r in nearest],
                patches=[self._exemplar(int(top_rows[r]), i, a_up, index, selected) for r in rows],
                edges=[Edge(neuron=int(j), weight=float(w)) for j, w in zip(chosen, weights)],
                vector=[float(x) for x in v[rows].mean(axis=0)],
            ))
        return concepts

    @staticmethod
    def _exemplar(p: int, i: int, a_up, index: PatchIndex, selected: ImageSet) -> Exemplar:
        image = int(index.image[p])
        box = selected.geometry(image).to_source(tuple(float(b) for b in index.box[p]))
        return Exemplar(image=image, box=box, activation=float(a_up[p, i]), granularity=float(index.granularity[p]))

    def _prune(self, access, upper, lower, i, chosen, a_up, pixels, index, n_top) -> np.ndarray:
        """The reference's optional pruning: cumulative masks of the tau list, over all patches."""
        block = access.block(lower, upper)
        tau = len(chosen)
        values = torch.empty(tau, len(index))
        with torch.no_grad():
            for start in range(0, len(index), self.forward_batch_size):
                which = np.arange(start, min(start + self.forward_batch_size, len(index)))
                x = make_patches(pixels, index, which)
                z = access.full_output(x, lower)
                for j in range(tau):
                    masked = zero_channels(z, chosen[: j + 1])
                    values[j, which] = readout(block(masked, x), self.token_reduce)[:, i].float().cpu()
        before = set(torch.topk(a_up[:, i], n_top).indices.tolist())
        acc = np.array([len(before & set(torch.topk(values[j], n_top).indices.tolist())) / n_top for j in range(tau)])
        threshold = acc.min() + self.acceptable_error_range
        below = np.nonzero(acc < threshold)[0]
        return chosen[: int(below[0]) + 1] if len(below) else chosen

    def _group(self, layers: list[Layer]) -> list:
        for idx, layer in enumerate(layers):
            n_groups = self.n_groups.get(layer.name) if isinstance(self.n_groups, dict) else self.n_groups
            layer.groups = build_groups(layer, idx, n_groups, self.max_groups, self.n_exemplars)
            self._report("groups", idx + 1, len(layers))
        edges = []
        for upper, lower in zip(layers, layers[1:]):
            edges.extend(group_edges(upper, lower))
        return edges

