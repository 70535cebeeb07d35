"""The NeurFlow estimator: ``NeurFlow(layers, ...).fit(model, images, target_class).circuit_``.

Top-down, for each pair (upper layer, the layer below it) in ``layers`` (ordered from the output
down): take every core neuron of the upper layer, its top-N patches, the Integrated Gradients of the
neuron w.r.t. the lower layer on those patches, keep the top-tau lower channels by mean |IG| as core
neurons of the lower layer, and cluster the neuron's top patches into concepts. Then group the
concepts of each layer and weigh the edges between groups. See docs/method.md for the choices
made where the paper and the reference code disagree.

Memory: patches are generated and streamed in batches from the selected images; the neuron readouts
(patches x channels) of each layer are held, and the complete maps of the last layer only (the IG
input space) when they fit ``map_cache_mb``: every IG stage starts from those instead of re-running
the model's trunk for each chunk of patches.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from .circuit import (SCHEMA_VERSION, Circuit, Concept, Edge, Exemplar, FitRecord, IGAccuracy, ImageRef, Layer, ModelInfo,
                      Neuron, Target)
from .clustering import ward_silhouette
from .edge_weights import l1_normalise, reference_rescale
from .groups import build_groups, group_edges
from .images import ImageSet
from .ig_accuracy import relative, stratified_mean_and_error, to_resample, uncertain_channels
from .integrated_gradients import ig_to_tolerance, multi_target_ig
from .layer_access import LayerAccess, check_eval_mode, readout, zero_channels
from .layer_budget import CALIBRATION_IMAGES, resolve_layers
from .memory import release_free_memory
from .model_output import class_scores
from .params import EngineParams, ImageSelection, validated
from .batch_norm_folding import folded_copy
from .block_gradients import fast_block_gradients
from .patches import PatchIndex, build_index, make_patches
from .stages import LayerStage, StageStore, fit_key
from neurflow.progress import Meter, Progress

log = logging.getLogger(__name__)

_ENGINE_FIELDS = EngineParams.__struct_fields__
_SELECTION_FIELDS = ImageSelection.__struct_fields__


def concept_sample(labels: np.ndarray, budget: int | None) -> np.ndarray:
    """Which of a neuron's top patches (rows, activation order; ``labels`` their concepts) its IG runs
    on: all of them, or about ``budget`` drawn from every concept in proportion to its size (at least
    one each), evenly spaced in activation order within the concept. Sorted row positions."""
    n = len(labels)
    if budget is None or budget >= n:
        return np.arange(n)
    picked = []
    for k in np.unique(labels):
        rows = np.nonzero(labels == k)[0]
        m = min(len(rows), max(1, round(budget * len(rows) / n)))
        picked.extend(rows[np.floor((np.arange(m) + 0.5) * len(rows) / m).astype(int)])
    return np.sort(np.asarray(picked, dtype=np.int64))


def sample_weights(labels: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Weights of the sampled rows that make a weighted sum over them estimate the mean over all rows:
    each concept's share of the rows, split evenly among its sampled rows (a stratified mean)."""
    drawn = labels[sample]
    rows = np.bincount(labels)
    return rows[drawn] / len(labels) / np.bincount(drawn, minlength=len(rows))[drawn]


def _signature() -> inspect.Signature:
    """``NeurFlow(layers, *, <every other field of EngineParams and ImageSelection>, progress=None)``."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for kind in (EngineParams, ImageSelection):
        for field in msgspec.structs.fields(kind):
            if field.required:
                default = inspect.Parameter.empty
            elif field.default_factory is not msgspec.NODEFAULT:
                default = tuple(field.default_factory())  # immutable: the one default object is shared
            else:
                default = field.default
            how = inspect.Parameter.POSITIONAL_OR_KEYWORD if field.required else inspect.Parameter.KEYWORD_ONLY
            params.append(inspect.Parameter(field.name, how, default=default))
    params.append(inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=None))
    return inspect.Signature(params)


_SIGNATURE = _signature()


@contextmanager
def _borrowed(model: nn.Module, device: str) -> Iterator[nn.Module]:
    """``model`` in eval mode on ``device`` for the block; every module's train/eval mode and the
    model's device as they were afterwards (even when the fit fails)."""
    modes = [(module, module.training) for module in model.modules()]
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    if len(devices) > 1:
        raise ValueError(f"the model's tensors lie on several devices ({', '.join(sorted(map(str, devices)))}); "
                         f"NeurFlow runs the whole model on one device (device={device!r})")
    try:
        yield model.eval().to(device)
    finally:
        for module, training in modes:
            module.training = training
        if devices:
            model.to(devices.pop())


@contextmanager
def _channels_last(model: nn.Module, wanted: bool, probe: torch.Tensor) -> Iterator[None]:
    """4-D weights channels-last for the block when ``wanted`` and the model runs so on ``probe``
    (one image); the weights that were contiguous are contiguous again afterwards."""
    converted = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4 and t.is_contiguous()]
    if not wanted or not converted:
        yield
        return

    def restore() -> None:
        for t in converted:
            t.data = t.data.contiguous()

    try:
        model.to(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                model(probe)
        except RuntimeError:  # e.g. a .view of a feature map: strides the model's code assumes
            restore()
        yield
    finally:
        restore()


class FewPatchesWarning(UserWarning):
    """Fewer patches than ``top_n``: every patch is used."""


@dataclass
class _Stage:
    """The IG of one upper layer as it goes: the current steps and the residual sums so far."""

    steps: int
    error: float = 0.0
    scale: float = 0.0
    pairs: int = 0
    resampled: int = 0

    measured: bool = False  # residuals are measured only with an ig_tolerance

    def accuracy(self) -> IGAccuracy:
        residual = round(relative(self.error, self.scale), 6) if self.measured else None
        return IGAccuracy(steps=self.steps, residual=residual, pairs=self.pairs, resampled=self.resampled)


class NeurFlow(BaseEstimator):
    """Find, cluster and connect the core neurons of ``layers`` for one target class.

    A scikit-learn estimator: the constructor only stores its arguments, :meth:`fit` validates them
    and leaves the result in ``circuit_`` (and the preset-resolved parameters in ``params_``), and
    ``get_params`` / ``set_params`` / ``sklearn.base.clone`` work. The parameters are the fields of
    :class:`~neurflow.core.params.EngineParams` and :class:`~neurflow.core.params.ImageSelection`
    (listed below, generated from them), plus ``progress``: a callback that receives
    :class:`~neurflow.progress.ProgressEvent` s (stage, done and total in the stage's own unit, elapsed, ETA).

    ``fit`` changes no global state: it draws no random numbers, sets no malloc policy (a process that
    runs fits may call :func:`neurflow.core.memory.malloc_for_fit` itself before each), and hands the
    model back in the train/eval modes and on the device it came in.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        # The signature is generated from the parameter Structs (see _SIGNATURE below), so there is one
        # list of parameters; binding against it keeps Python's usual errors for unknown names.
        bound = _SIGNATURE.bind(self, *args, **kwargs)
        for name, param in _SIGNATURE.parameters.items():
            if name != "self":
                setattr(self, name, bound.arguments.get(name, param.default))

    # -- parameters ------------------------------------------------------------------------------
    def _validated(self) -> tuple[EngineParams, ImageSelection]:
        """The stored parameters, checked against their Structs; the preset resolved."""
        values = {name: getattr(self, name) for name in _ENGINE_FIELDS}
        params = validated(EngineParams, values).resolved()
        selection = validated(ImageSelection, {name: getattr(self, name) for name in _SELECTION_FIELDS})
        return params, selection

    def resolved_params(self) -> EngineParams:
        """The engine parameters a fit would use now: validated, the preset resolved."""
        return self._validated()[0]

    def _report(self, stage: str, done: int, total: int, unit: str) -> None:
        meter = self.__dict__.get("_meter")
        if meter is None or meter.sink is not self.progress:  # progress may be set between fits (set_params)
            meter = self._meter = Meter(self.progress)
        meter(stage, done, total, unit)

    def _start_clock(self) -> None:
        """The first stage of a fit (or a forward pass) starts now, not when the previous call ended."""
        self._meter = Meter(self.progress)

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, model: nn.Module, images: ImageSet | torch.Tensor, target_class: int,
            model_info: ModelInfo | None = None, target_name: str | None = None,
            logits: torch.Tensor | None = None, readout_cache: dict | None = None,
            mean: list[float] | None = None, std: list[float] | None = None,
            stages: StageStore | None = None) -> NeurFlow:
        """Fit the circuit of ``target_class`` into ``self.circuit_``; return ``self``.

        ``images``: an :class:`ImageSet` (it carries the preprocessing its pixels were made with, which
        the circuit records) or a bare (N, 3, S, S) tensor of model inputs; for a tensor, ``mean`` and
        ``std`` say how it was normalised, else the circuit records the normalisation as unknown.

        ``logits``: the model's outputs on ``images`` when the caller already has them (one forward
        pass shared by several target classes, see :meth:`predict_logits`). ``readout_cache``: a dict
        the caller keeps between fits of one model with the same parameters; when a class selects
        exactly the images of the previous fit (``select="all"``, or equal selections) the patch
        readouts are reused instead of recomputed. ``stages``: a :class:`~neurflow.core.stages.StageStore`;
        each finished stage (readouts, each layer's IG and concepts) is written to it, and the stages
        it already holds for this fit (same parameters, class, images and weights) are loaded, not
        recomputed: a fit stopped midway continues."""
        self.params_, selection = self._validated()
        p = self.params_
        self._start_clock()
        if isinstance(images, torch.Tensor):
            images = ImageSet.from_tensor(images, mean, std)
        elif mean is not None or std is not None:
            raise ValueError("mean/std describe a bare tensor of images; an ImageSet records its own preprocessing")
        first = images.pixels[:1].to(p.device)
        with _borrowed(model, p.device) as model, _channels_last(model, bool(p.channels_last), first):
            check_eval_mode(model)
            n_images = min(len(images), selection.max_images or len(images))
            self.params_ = p = resolve_layers(p, model, images.input_size, n_images, images.pixels.shape[1],
                                              images.pixels[:CALIBRATION_IMAGES].to(p.device))
            self.circuit_ = self._fit(model, images, int(target_class), selection, model_info, target_name, logits,
                                      readout_cache, stages)
        return self

    def _fit(self, model: nn.Module, images: ImageSet | torch.Tensor, target_class: int, selection: ImageSelection,
             model_info: ModelInfo | None, target_name: str | None, logits: torch.Tensor | None,
             readout_cache: dict | None = None, stages: StageStore | None = None) -> Circuit:
        p = self.params_
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        access = LayerAccess(model, p.layers, p.token_reduce)
        shapes = self._check_layer_order(access, images)

        if logits is None:
            logits = self._logits(model, images)
        selected = self._select_images(logits, images, target_class, selection)
        pixels = selected.pixels.to(p.device)
        index = build_index(len(selected), selected.input_size, tuple(p.granularities), p.stride_ratio)
        timings["select"] = time.perf_counter() - clock

        clock = time.perf_counter()
        keep_maps = self._fits_map_cache(shapes[p.layers[-1]], len(index))
        cached = readout_cache.get("pixels") if readout_cache is not None else None
        if stages is not None:
            record = msgspec.to_builtins(p) | msgspec.to_builtins(FitRecord(n_patches=len(index), selection=selection))
            stages.open(fit_key(record, target_class, pixels, model))
        resumed = stages.readouts() if stages is not None else None
        if resumed is not None:
            acts, maps = resumed[0], resumed[1].to(p.device) if resumed[1] is not None else None
        elif (cached is not None and cached.shape == pixels.shape and torch.equal(cached, pixels)
                and (readout_cache.get("maps") is not None or not keep_maps)):
            acts, maps = readout_cache["acts"], readout_cache.get("maps")
        else:
            folded = folded_copy(model, p.layers) if p.fold_batch_norm else None
            read_access = LayerAccess(folded, p.layers, p.token_reduce) if folded is not None else access
            acts, maps = self._readouts(read_access, pixels, index, keep_maps)
            del folded, read_access
            if readout_cache is not None:  # one entry: the last selection (memory stays one readout set)
                readout_cache.clear()
                readout_cache.update(pixels=pixels, acts=acts, maps=maps)
        if stages is not None and resumed is None:
            stages.save_readouts(acts, maps)
        timings["activations"] = time.perf_counter() - clock
        if len(index) < p.top_n:
            warnings.warn(f"only {len(index)} patches for top_n={p.top_n}; using all of them", FewPatchesWarning,
                          stacklevel=3)

        layers: list[Layer] = []
        current = [target_class]
        importance = {target_class: 1.0}
        for u in range(len(p.layers) - 1):
            clock = time.perf_counter()
            fit = stages.layer(u) if stages is not None else None
            if fit is None:
                fit = self._fit_layer(access, u, current, importance, acts, maps, pixels, index, selected)
                if stages is not None:
                    stages.save_layer(u, fit)
            layers.append(Layer(name=p.layers[u], shape=list(shapes[p.layers[u]]), neurons=fit.neurons, groups=[],
                                ig=fit.accuracy))
            current, importance = fit.next_neurons, fit.importance
            timings[f"layer:{p.layers[u]}"] = time.perf_counter() - clock
        bottom = p.layers[-1]
        layers.append(Layer(name=bottom, shape=list(shapes[bottom]), neurons=[], groups=[]))

        clock = time.perf_counter()
        edges = self._group(layers)
        timings["groups"] = time.perf_counter() - clock

        info = model_info or self._model_info(model, images)
        refs = [ImageRef(id=i, path=selected.paths[i], width=selected.sizes[i][0], height=selected.sizes[i][1])
                for i in range(len(selected))]
        return Circuit(schema=SCHEMA_VERSION, model=info, target=Target(class_index=target_class, name=target_name),
                       params=msgspec.convert(msgspec.to_builtins(p), EngineParams), images=refs, layers=layers,
                       group_edges=edges, timings={k: round(v, 3) for k, v in timings.items()},
                       fit=FitRecord(n_patches=len(index), selection=selection))

    def _record(self, selection: ImageSelection, n_images: int, n_patches: int) -> dict[str, Any]:
        """What identifies a fit for its kept stages: every parameter as used, the selection, the data sizes."""
        return msgspec.to_builtins(self.params_) | msgspec.to_builtins(selection) | {
            "n_images": n_images, "n_patches": n_patches}

    def _model_info(self, model: nn.Module, images: ImageSet) -> ModelInfo:
        """What a fit given no ``model_info`` knows: the module's class, and the images' real
        preprocessing (or that it is unknown)."""
        pre = images.preprocess
        mean, std = pre.normalisation() if pre else ([0.0] * 3, [1.0] * 3)
        return ModelInfo(arch=type(model).__name__, weights_sha256=None, num_classes=int(self.n_classes_),
                         input_size=images.input_size, mean=mean, std=std, normalisation="recorded" if pre else "unknown")

    def _check_layer_order(self, access: LayerAccess, images: ImageSet) -> dict[str, tuple[int, ...]]:
        layers = self.params_.layers
        with torch.no_grad():
            order, shapes = access.call_order(images.pixels[:1].to(self.params_.device))
        missing = [n for n in layers if n not in shapes]
        if missing:
            raise ValueError(f"layer(s) {missing} are never called in the model's forward pass")
        if order != layers[::-1]:
            raise ValueError(f"layers must be ordered from the output down; the forward pass runs them as "
                             f"{order[::-1]} (output first), got {layers}")
        return shapes

    def predict_logits(self, model: nn.Module, images: ImageSet | torch.Tensor) -> torch.Tensor:
        """The model's outputs on every image (float32, CPU), in batches; pass them to :meth:`fit` as
        ``logits`` to share one forward pass between several target classes."""
        params, _ = self._validated()
        self._start_clock()
        with _borrowed(model, params.device) as model:
            return self._logits(model, images, params)

    def _logits(self, model: nn.Module, images: ImageSet | torch.Tensor, params: EngineParams | None = None) -> torch.Tensor:
        p = params or self.params_
        pixels = images.pixels if isinstance(images, ImageSet) else images
        out = []
        with torch.no_grad():
            for start in range(0, len(pixels), p.forward_batch_size):
                batch = model(pixels[start:start + p.forward_batch_size].to(p.device))
                out.append(class_scores(batch, p.output).float().cpu())
                self._report("forward pass", min(start + p.forward_batch_size, len(pixels)), len(pixels), "images")
        return torch.cat(out)

    def _select_images(self, logits: torch.Tensor, images: ImageSet, target_class: int,
                       selection: ImageSelection) -> ImageSet:
        if logits.dim() != 2 or len(logits) != len(images):
            raise ValueError(f"the model output has shape {tuple(logits.shape)}; a (batch, classes) output for "
                             f"each of the {len(images)} images is expected")
        if not torch.isfinite(logits).all():
            raise ValueError("the model produces non-finite outputs on these images")
        self.n_classes_ = n_classes = logits.shape[1]
        if not 0 <= target_class < n_classes:
            raise ValueError(f"target class {target_class} is out of range; the model has {n_classes} classes (0..{n_classes - 1})")
        preds = logits.argmax(dim=1)
        keep = list(range(len(images)))
        if selection.select == "predicted":
            keep = torch.nonzero(preds == target_class).flatten().tolist()
        self._report("selecting images", len(images), len(images), "images")
        if not keep:
            counts = {c: n for c, n in enumerate(torch.bincount(preds, minlength=n_classes).tolist()) if n}
            raise ValueError(f"no image is predicted as class {target_class}; predictions per class (classes "
                             f"with none left out): {counts}. Use select='all' or give images of that class")
        return images.subset(keep[: selection.max_images] if selection.max_images else keep)

    def _fits_map_cache(self, bottom_shape: tuple[int, ...], n_patches: int) -> bool:
        size = n_patches * int(np.prod(bottom_shape)) * 4  # float32
        return 0 < size <= self.params_.map_cache_mb * 2**20

    def _readouts(self, access: LayerAccess, pixels: torch.Tensor, index: PatchIndex,
                  keep_maps: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Neuron readouts of every layer for every patch (float32 on CPU), one streamed pass; with
        ``keep_maps``, also the complete maps of the last layer (on the fit's device), which the IG
        stages start from instead of re-running the model up to their lower layer for every chunk."""
        total = len(index)
        bottom = self.params_.layers[-1]
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.params_.layers}
        maps = None
        with torch.no_grad():
            for start in range(0, total, self.params_.forward_batch_size):
                which = np.arange(start, min(start + self.params_.forward_batch_size, total))
                wanted = {bottom: None} if keep_maps else None
                found = access.readouts(make_patches(pixels, index, which), maps=wanted)
                for name, value in found.items():
                    chunks[name].append(value.float().cpu())
                if keep_maps:
                    if maps is None:  # filled in place: no second copy from a final concatenation
                        maps = torch.empty((total, *wanted[bottom].shape[1:]), dtype=torch.float32,
                                           device=wanted[bottom].device)
                    maps[start:start + len(which)] = wanted[bottom]
                self._report("activations", int(which[-1]) + 1, total, "patches")
        acts = {name: torch.cat(parts) for name, parts in chunks.items()}
        for name in self.params_.layers:
            if not torch.isfinite(acts[name]).all():
                raise ValueError(f"layer {name!r} produces non-finite activations (NaN or inf) on these images")
        return acts, maps

    def _lower_maps(self, access: LayerAccess, lower: str, which, x: torch.Tensor,
                    maps: torch.Tensor | None) -> torch.Tensor:
        """Complete maps of layer ``lower`` for the patches ``which`` (pixels ``x``): from the kept maps
        of the last layer through the block up to ``lower`` when there is one that needs no input
        (a few blocks instead of the whole trunk), else by re-running the model from the pixels."""
        if maps is not None:
            bottom = self.params_.layers[-1]
            z = maps[torch.as_tensor(np.asarray(which, dtype=np.int64), device=maps.device)].to(x.device)
            if lower == bottom:
                return z
            block = access.block(bottom, lower)
            if not block.needs_input:
                return block(z)
        return access.full_output(x, lower)

    def _fit_layer(self, access, u, neurons, importance, acts, maps, pixels, index, selected) -> LayerStage:
        p = self.params_
        upper, lower = p.layers[u], p.layers[u + 1]
        a_up = acts[upper]
        n_top = min(p.top_n, len(index))
        top = {i: torch.topk(a_up[:, i], n_top, sorted=True).indices.numpy() for i in neurons}
        v_low = acts[lower].double().numpy()
        n_lower = v_low.shape[1]
        tau = min(p.tau, n_lower)
        # Concepts come from the lower activations alone, so they can be found before any IG and
        # decide which of a neuron's patches its IG runs on (all of them unless ig_patches is set).
        clusters = {i: self._cluster(v_low[top[i]]) for i in neurons}
        sample = {i: concept_sample(clusters[i], p.ig_patches) for i in neurons}
        stage = _Stage(steps=p.ig_steps)
        scores = self._ig_scores(access, upper, lower, {i: top[i][sample[i]] for i in neurons}, maps, pixels, index,
                                 a_up, stage)
        if p.ig_stability != "off":
            uncertain = {i: uncertain_channels(*stratified_mean_and_error(np.abs(scores[i]), clusters[i], sample[i]),
                                               tau, p.ig_stability) for i in neurons if len(sample[i]) < n_top}
            union = {int(j) for i in neurons for j in np.argsort(-np.abs(scores[i]).mean(axis=0))[:tau]}
            unstable = to_resample(uncertain, len(union))
            rest = {i: np.setdiff1d(np.arange(n_top), sample[i]) for i in unstable}
            more = self._ig_scores(access, upper, lower, {i: top[i][rest[i]] for i in unstable}, maps, pixels, index,
                                   a_up, stage)
            for i in unstable:
                order = np.argsort(np.concatenate([sample[i], rest[i]]), kind="stable")
                scores[i] = np.concatenate([scores[i], more[i]])[order]
                sample[i] = np.arange(n_top)
            stage.resampled = len(unstable)

        out_neurons: list[Neuron] = []
        next_importance: dict[int, float] = {}
        for i in neurons:
            s = scores[i]  # (rows of the sample, C_lower), in activation order
            if len(sample[i]) == n_top:
                ranking = np.abs(s).mean(axis=0)
            else:  # each sampled row stands for its concept's share of the top patches
                ranking = sample_weights(clusters[i], sample[i]) @ np.abs(s)
            chosen = np.argsort(-ranking, kind="stable")[:tau]
            if p.acceptable_error_range >= 0:
                chosen = self._prune(access, upper, lower, i, chosen, a_up, maps, pixels, index, n_top)
            for j in chosen:
                next_importance[int(j)] = max(next_importance.get(int(j), 0.0), float(ranking[j]))
            concepts = self._concepts(i, top[i], clusters[i], s, sample[i], chosen, v_low, a_up, index, selected)
            out_neurons.append(Neuron(id=int(i), importance=float(importance.get(i, 0.0)), concepts=concepts))
        is_last_pair = u + 1 == len(p.layers) - 1
        next_neurons = [] if is_last_pair else sorted(next_importance)
        return LayerStage(neurons=out_neurons, next_neurons=next_neurons, importance=next_importance,
                          accuracy=stage.accuracy())

    def _ig_scores(self, access, upper, lower, top, maps, pixels, index, a_up, stage: _Stage) -> dict[int, np.ndarray]:
        """Per-channel IG scores (rows, C_lower) of every upper neuron on its patches ``top[i]``; with an
        ``ig_tolerance``, each chunk's steps go up the ladder until its completeness residual is below it
        (``stage`` carries the steps between calls and adds up the residuals)."""
        reported = stage.pairs  # a second call (the resampled patches) counts on from the first
        needs: dict[int, list[int]] = {}
        for i, rows in top.items():
            for p in rows:
                needs.setdefault(int(p), []).append(i)
        if not needs:
            return {i: np.zeros((0, 0)) for i in top}
        block = access.block(lower, upper)
        tolerance = self.params_.ig_tolerance
        # Patches needed by many neurons first: chunks then have few empty backward rows.
        patches = sorted(needs, key=lambda p: (-len(needs[p]), p))
        found: dict[tuple[int, int], np.ndarray] = {}
        total = reported + sum(len(t) for t in needs.values())
        baseline = None  # F(0): one zero map through the block (per chunk when the block reads the pixels)
        # exact shortcuts: convolutions reading the interpolated input run once per patch, the last
        # ones skip the zero channels of a one-neuron gradient (core/block_gradients.py)
        with fast_block_gradients(access.model):
            for start in range(0, len(patches), self.params_.batch_size):
                which = patches[start:start + self.params_.batch_size]
                x = make_patches(pixels, index, which)
                with torch.no_grad():
                    z = self._lower_maps(access, lower, which, x, maps)
                targets = [needs[p] for p in which]
                if tolerance != "off" and (baseline is None or block.needs_input):
                    with torch.no_grad():
                        zero = torch.zeros_like(z if block.needs_input else z[:1])
                        baseline = readout(block(zero, x if block.needs_input else None),
                                           self.params_.token_reduce).double().cpu()
                if tolerance == "off":
                    result = multi_target_ig(block, z, targets, stage.steps, self.params_.token_reduce, x=x)
                else:
                    delta = np.array([float(a_up[p, t]) - float(baseline[r if block.needs_input else 0, t])
                                      for r, (p, tlist) in enumerate(zip(which, targets)) for t in tlist])
                    result, stage.steps, error, scale = ig_to_tolerance(
                        block, z, targets, stage.steps, tolerance, delta, self.params_.token_reduce, x=x)
                    stage.error += error
                    stage.scale += scale
                    stage.measured = True
                for p, tlist, rows in zip(which, targets, result):
                    for t, value in zip(tlist, rows):
                        found[(t, p)] = value.double().cpu().numpy()
                stage.pairs += sum(len(t) for t in targets)
                release_free_memory()  # varying-size IG tensors fragment the heap; keep RSS flat
                self._report(f"ig {upper}", stage.pairs, total, "neuron-patch pairs")
        return {i: np.stack([found[(i, int(p))] for p in rows]) for i, rows in top.items()}

    def _cluster(self, v: np.ndarray) -> np.ndarray:
        """Concept label of each of a neuron's top patches (rows of lower activations)."""
        allow_single = self.params_.allow_single_concept and not self.params_.reference_compat
        return ward_silhouette(v, max_k=self.params_.max_concepts, allow_single=allow_single)

    def _concepts(self, i, top_rows, labels, s, sample, chosen, v_low, a_up, index, selected) -> list[Concept]:
        v = v_low[top_rows]
        normalise = reference_rescale if self.params_.reference_compat else l1_normalise
        concepts = []
        for k in range(int(labels.max()) + 1):
            rows = np.nonzero(labels == k)[0]  # activation order
            sub = v[rows][:, chosen]
            dist = np.linalg.norm(sub - sub.mean(axis=0), axis=1)
            nearest = np.sort(rows[np.argsort(dist, kind="stable")[: self.params_.n_exemplars]])
            weights = normalise(s[labels[sample] == k][:, chosen].mean(axis=0))
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

    def _prune(self, access, upper, lower, i, chosen, a_up, maps, pixels, index, n_top) -> np.ndarray:
        """The reference's optional pruning: cumulative masks of the tau list, over all patches."""
        block = access.block(lower, upper)
        tau = len(chosen)
        values = torch.empty(tau, len(index))
        with torch.no_grad():
            for start in range(0, len(index), self.params_.forward_batch_size):
                which = np.arange(start, min(start + self.params_.forward_batch_size, len(index)))
                x = make_patches(pixels, index, which)
                z = self._lower_maps(access, lower, which, x, maps)
                for j in range(tau):
                    masked = zero_channels(z, chosen[: j + 1])
                    values[j, which] = readout(block(masked, x), self.params_.token_reduce)[:, i].float().cpu()
        before = set(torch.topk(a_up[:, i], n_top).indices.tolist())
        acc = np.array([len(before & set(torch.topk(values[j], n_top).indices.tolist())) / n_top for j in range(tau)])
        threshold = acc.min() + self.params_.acceptable_error_range
        below = np.nonzero(acc < threshold)[0]
        return chosen[: int(below[0]) + 1] if len(below) else chosen

    def _group(self, layers: list[Layer]) -> list:
        for idx, layer in enumerate(layers):
            p = self.params_
            n_groups = p.n_groups.get(layer.name) if isinstance(p.n_groups, dict) else p.n_groups
            layer.groups = build_groups(layer, idx, n_groups, p.max_groups, p.n_exemplars)
            self._report("grouping neurons", idx + 1, len(layers), "layers")
        edges = []
        for upper, lower in zip(layers, layers[1:]):
            edges.extend(group_edges(upper, lower))
        return edges



NeurFlow.__init__.__signature__ = _SIGNATURE  # what help(), IDEs and sklearn's get_params read


def _parameter_docs() -> str:
    lines = ["", "    Parameters", "    ----------"]
    for kind in (EngineParams, ImageSelection):
        for name in kind.__struct_fields__:
            meta = msgspec.json.schema(kind)["$defs"][kind.__name__]["properties"][name]
            lines.append(f"    {name}: {meta.get('description', '')}")
    lines.append("    progress: callback receiving :class:`~neurflow.progress.ProgressEvent` s.")
    return "\n".join(lines) + "\n"


NeurFlow.__doc__ = (NeurFlow.__doc__ or "") + _parameter_docs()
