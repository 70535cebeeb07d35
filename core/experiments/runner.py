"""All experiments of a spec: fit the circuits, then measure them into :class:`ExperimentResults`.

Circuits are fitted as ``neurflow run`` fits them (:func:`core.pipeline.fit_spec`), once per tau of
the fidelity curves and once at the engine's tau for the other two experiments. The fidelity curves
use the *labelled* images (true label = the class); edge fidelity and optimality use the patches of
the images each circuit was fitted on, as the reference does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from msgspec.structs import replace
from torch import nn

from neurflow.progress import Meter, Progress

from ..circuit import Circuit
from ..images import ImageSet, Preprocess
from ..layer_access import LayerAccess
from ..model_intake import load_model
from ..patches import build_index
from ..pipeline import fit_spec, resolve
from .attributions import channel_importance
from .edge_fidelity import edge_fidelity
from .fidelity import fidelity_curves
from .labeled_images import images_of_class, load_labeled_images
from .optimality import optimality
from .patch_pool import PatchPool
from .results import (SCHEMA_VERSION, EdgeFidelityResult, ExperimentResults, FidelityResult, OptimalityResult)
from .spec import ExperimentJobSpec


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])




def fit_circuits(spec: ExperimentJobSpec, base_dir: Path, model: nn.Module, taus: list[int], classes: list[int],
                 progress: Progress | None = None) -> dict[int, dict[int, Circuit]]:
    """``{tau: {class: circuit}}``."""
    data = replace(spec.data, target_class=list(classes))
    return {tau: fit_spec(replace(spec, data=data, engine=replace(spec.engine, tau=tau)), base_dir, progress, model=model)
            for tau in taus}


def core_set(circuit: Circuit, layer_index: int, neuron: int) -> list[int]:
    """The lower core neurons the engine chose for ``neuron`` (the same for all its concepts)."""
    lay = circuit.layers[layer_index]
    node = next(n for n in lay.neurons if n.id == neuron)
    return sorted({e.neuron for c in node.concepts for e in c.edges})


def run_experiments(spec: ExperimentJobSpec, base_dir: Path, progress: Progress | None = None,
                    model: nn.Module | None = None) -> ExperimentResults:
    ex = spec.experiments
    timings: dict[str, float] = {}
    weights = resolve(base_dir, spec.model.weights)
    if model is None:
        model = load_model(spec.model.arch, weights, spec.model.num_classes)
    engine = spec.engine.resolved()
    device, main_tau = engine.device, engine.tau
    model = model.eval().to(device)
    classes = spec.experiment_classes()
    fid_taus = sorted(set(ex.fidelity.taus or [main_tau])) if ex.fidelity.enabled else []
    taus = sorted(set(fid_taus) | {main_tau})

    report = Meter(progress)
    clock = time.perf_counter()
    circuits = fit_circuits(spec, base_dir, model, taus, classes, progress)
    timings["fit"] = time.perf_counter() - clock

    results = ExperimentResults(schema=SCHEMA_VERSION, arch=spec.model.arch, classes=classes,
                                layers=list(spec.engine.layers), tau=main_tau, settings=ex)
    preprocess = Preprocess(spec.model.input_size, *spec.model.normalisation())

    if ex.fidelity.enabled:
        clock = time.perf_counter()
        labelled = load_labeled_images(resolve(base_dir, ex.images or spec.data.images), preprocess,
                                       spec.model.class_names or [], spec.model.num_classes,
                                       resolve(base_dir, ex.labels_csv) if ex.labels_csv else None)
        curves = []
        for ci, c in enumerate(classes):
            pixels = images_of_class(labelled, c, ex.max_images_per_class).pixels.to(device)
            for tau in fid_taus:
                report("fidelity", len(curves), len(classes) * len(fid_taus) * 4, "curves")
                curves += fidelity_curves(model, circuits[tau][c], pixels, c, ex.fidelity.n_random,
                                          _rng(ex.seed, 1, ci, tau), tau)
        report("fidelity", len(curves), len(curves), "curves")
        results.fidelity = FidelityResult(curves=curves)
        timings["fidelity"] = time.perf_counter() - clock

    if ex.edge_fidelity.enabled or ex.optimality.enabled:
        clock = time.perf_counter()
        fit_images = ImageSet.from_folder(resolve(base_dir, spec.data.images), preprocess)
        results.edge_fidelity, results.optimality = _neuron_experiments(spec, model, circuits[main_tau], classes,
                                                                        fit_images, progress, device)
        timings["edge_fidelity_and_optimality"] = time.perf_counter() - clock
    results.timings = {k: round(v, 2) for k, v in timings.items()}
    return results


def _neuron_experiments(spec: ExperimentJobSpec, model: nn.Module, circuits: dict[int, Circuit], classes: list[int],
                        fit_images: ImageSet, progress: Progress | None, device: str):
    ex = spec.experiments
    report = Meter(progress)
    ef, op = ex.edge_fidelity, ex.optimality
    methods = list(dict.fromkeys(ef.methods if ef.enabled else ["integrated_gradients", "activation"]))
    rows, sum_mean, opt_rows, notes = [], [], [], []
    ran: list[str] = []
    for ci, c in enumerate(classes):
        circuit = circuits[c]
        params = circuit.params
        where = {p: i for i, p in enumerate(fit_images.paths)}
        images = fit_images.subset([where[ref.path] for ref in circuit.images])
        index = build_index(len(images), images.input_size, params.granularities, params.stride_ratio)
        names = [lay.name for lay in circuit.layers]
        access = LayerAccess(model, names, params.token_reduce)
        for u in range(len(names) - 1):
            ids = [n.id for n in circuit.layers[u].neurons]
            if not ids:
                continue
            rng = _rng(ex.seed, 2, ci, u)
            edge_ids = rng.permutation(ids)[: ef.n_neurons].tolist() if ef.enabled else []
            opt_ids = rng.permutation(ids)[: op.n_neurons].tolist() if op.enabled else []
            pool = PatchPool(access, images.pixels.to(device), index, names[u + 1], names[u], params.top_n)
            stage = f"neurons {names[u]}<-{names[u + 1]} (class {c})"
            todo = list(dict.fromkeys(edge_ids + opt_ids))
            for k, neuron in enumerate(todo):
                report(stage, k, len(todo), "neurons")
                maps, x = pool.top_maps(neuron)
                importance, skipped = channel_importance(pool.block, model, maps, neuron, methods, params.ig_steps,
                                                         access.token_reduce, x, seed=ex.seed)
                notes += [n for n in skipped if n not in notes]
                ran += [m for m in importance if m not in ran]
                if neuron in edge_ids:
                    r, sm = edge_fidelity(pool, c, neuron, importance, ef.subset_sizes, ef.n_subsets, rng)
                    rows += r
                    if sm is not None:
                        sum_mean.append(sm)
                if neuron in opt_ids:
                    opt_rows.append(optimality(pool, c, neuron, core_set(circuit, u, neuron), importance,
                                               op.n_random, rng))
            report(stage, len(todo), len(todo), "neurons")
    edge = EdgeFidelityResult(methods=ran, notes=notes, rows=rows, sum_vs_mean=sum_mean) if ef.enabled else None
    return edge, OptimalityResult(rows=opt_rows) if op.enabled else None
