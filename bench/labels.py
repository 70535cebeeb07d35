"""``python -m bench.run labels``: label quality on worlds the labeler was tuned on, and on others.

Every world of :data:`neurflow.world.suite.SUITE` has its own network, its own CLIP (ViT or ResNet
image tower, trained only on that world), noisy CLIPs of several qualities (``--clip-quality``:
some parts learned under another part's name; ``--noisy-towers both`` makes one per tower and
labels with each alone and both at once) and engine circuits of two classes. Each group's truth is
what its mosaic shows: the part that dominates the majority of its five display exemplars (part
masks), when at least 3 of 5 do; groups without such a majority have no reference. A group is
*mixed* when its exemplars are not all that part, or when its other top patches are mostly another.

Every (world, CLIP quality, CLIP set) is measured on two sets of groups: the engine's own (``engine``)
and mixed groups constructed from its pure ones (``mixed*``, :mod:`bench.mixed`). Methods:

* ``baseline``: the concept with the highest mean cosine similarity to the five exemplars (summed
  over the set's CLIPs);
* ``labeler``: the pooled mosaic score and the fitted combination of
  :mod:`neurflow.labeler.evidence`, as ``label_circuit`` computes them.

On the *dev* worlds only, a grid of exemplar weights and exemplar votes is compared with the
labeler's constants, the combination is fitted (``--write-combination`` ships it as
``labeler/combination.json``) and the uncertainty threshold is shown against others; every unit is
then reported with the shipped combination: top-1 (all, mixed groups, labels with confidence >= 0.5
and their coverage), the confidence's ROC-AUC and ECE, beside the baseline's. ``caption``: the short
label of a tiny captioner trained on the dev worlds only (:mod:`neurflow.world.captioner`), engine
groups only (``--no-captions`` leaves it out).
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GRID_WEIGHTS = (1.0, 0.7, 0.5)  # weight of the exemplars' votes against all activation-weighted patches
GRID_VOTES = ("hard", "soft")  # how the exemplars vote (neurflow.labeler.scoring.MOSAIC_EXEMPLAR_VOTES)
MIN_MAJORITY = 3  # of 5 exemplars: below, the mosaic shows no one part and the group has no reference
RELIABILITY_BINS = 5
#: The worlds ``make bench`` labels: the dev worlds the combination is fitted on and the held-out
#: worlds it is reported on, each with every noisy CLIP of both towers (docs/label-quality.md).
BENCH_WORLDS = ("standard", "cluttered", "objects", "shapes2-cluttered", "shapes3", "shapes3-cluttered", "shapes3-uneven",
                "shapes3-uneven-cluttered")
RERANK_GRID = (1, 2, 3)  # candidates the combination may choose between (neurflow.labeler.evidence.RERANK_CANDIDATES)


@dataclass
class GroupData:
    """One group's embeddings and truth."""

    world: str
    gid: str
    exemplars: np.ndarray  # (5, d)
    patches: np.ndarray  # (n, d) labeling patches, exemplars first
    held: np.ndarray  # (h, d) held-out top patches
    reference: str | None  # the mosaic's part
    mixed: bool
    ref_mixture: np.ndarray = field(repr=False, default=None)
    negatives: np.ndarray = field(repr=False, default=None)
    weights: np.ndarray = field(repr=False, default=None)  # (n,) activation weights of ``patches``


@dataclass
class WorldData:
    name: str
    role: str
    arch: str
    concepts: np.ndarray
    names: list[str]
    logit_scale: float
    groups: list[GroupData]
    heldout_accuracy: float | None
    clip_top1: float
    prompts: np.ndarray | None = field(repr=False, default=None)  # (t, c, d) the vocabulary under each prompt


def add_arguments(parser) -> None:
    from neurflow.world.suite import CLIP_QUALITIES

    parser.add_argument("--label-worlds", nargs="+", metavar="WORLD", help=f"suite worlds (default: {' '.join(BENCH_WORLDS)})")
    parser.add_argument("--label-json", metavar="PATH", help="also write the label table as JSON here")
    parser.add_argument("--no-captions", dest="label_captions", action="store_false",
                        help="skip the caption row (a tiny captioner trained on the dev worlds; minutes on first use)")
    parser.add_argument("--clip-quality", nargs="+", default=["good", "q90", "q80", "q65"], choices=["good", *CLIP_QUALITIES],
                        help="label with each world's own CLIP ('good') and/or its noisy CLIPs of these qualities "
                             "(neurflow.world.suite.CLIP_QUALITIES: each tower alone and both at once; trained on first use)")
    parser.add_argument("--noisy-towers", default="both", choices=["both", "own"],
                        help="noisy CLIPs of both towers (each alone and both at once), or only the tower of each "
                             "world's own CLIP (one CLIP; the cheap one to train)")
    parser.add_argument("--write-combination", action="store_true",
                        help="write the combination fitted on the dev worlds to neurflow/labeler/combination.json")


def _cache_paths(entry, bundle: Path) -> tuple[Path, Path]:
    stem = entry.model.directory / f"label-bench-v2-{bundle.name}-{'-'.join(map(str, sorted(entry.circuits)))}"
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def _save(w: WorldData, entry, bundle: Path) -> None:
    """Embeddings and truth of every group, so that a second run only scores (no pickles: arrays + JSON)."""
    arrays, meta = {"concepts": w.concepts}, []
    if w.prompts is not None:
        arrays["prompts"] = w.prompts
    for i, g in enumerate(w.groups):
        for key in ("exemplars", "patches", "held", "ref_mixture", "negatives", "weights"):
            if getattr(g, key) is not None:
                arrays[f"{i}_{key}"] = getattr(g, key)
        meta.append({"gid": g.gid, "reference": g.reference, "mixed": g.mixed})
    npz, js = _cache_paths(entry, bundle)
    np.savez(npz, **arrays)
    js.write_text(json.dumps({"names": w.names, "logit_scale": w.logit_scale, "heldout_accuracy": w.heldout_accuracy,
                              "clip_top1": w.clip_top1, "groups": meta}))


def _load(entry, bundle: Path, arch: str) -> WorldData | None:
    npz, js = _cache_paths(entry, bundle)
    if not (npz.is_file() and js.is_file()):
        return None
    meta = json.loads(js.read_text())
    with np.load(npz, allow_pickle=False) as arrays:
        groups = [GroupData(entry.world.name, m["gid"], *(arrays[f"{i}_{k}"] for k in ("exemplars", "patches", "held")),
                            m["reference"], m["mixed"], arrays[f"{i}_ref_mixture"], arrays[f"{i}_negatives"],
                            arrays[f"{i}_weights"] if f"{i}_weights" in arrays else None)
                  for i, m in enumerate(meta["groups"])]
        concepts = arrays["concepts"]
        prompts = arrays["prompts"] if "prompts" in arrays else None
    suite = entry.world
    return WorldData(suite.name, suite.role, arch, concepts, meta["names"], meta["logit_scale"], groups,
                     meta["heldout_accuracy"], meta["clip_top1"], prompts)


def _collect(name: str, log: Callable[[str], None], quality: str = "good", tower: str | None = None) -> WorldData:
    """A world's groups embedded by its own CLIP (``good``), or by its noisy CLIP of ``quality`` and ``tower``
    (cached next to the world's network: a second run only scores)."""
    from neurflow.world.suite import ensure_suite_world

    entry = ensure_suite_world(name, log=log, clip_qualities=[quality], towers=[tower or "vit"])
    bundles = entry.clip_bundles(quality)
    arch = next(iter(bundles)) if quality == "good" else (tower or "vit")
    bundle = bundles[arch]
    cached = _load(entry, bundle, arch)
    if cached is None:
        cached = _embed(entry, bundle, arch, log)
        _save(cached, entry, bundle)
    return cached


def _embed(entry, bundle: Path, arch: str, log: Callable[[str], None]) -> WorldData:
    from neurflow.labeler.clip_model import load_clip
    from neurflow.labeler.labeling import PatchEmbedder
    from neurflow.labeler.patches import (PatchLoader, activation_weights, group_patches, patch_key, random_boxes,
                                          reference_pool, split_holdout)
    from neurflow.labeler.scoring import mixture
    from neurflow.labeler.vocabulary import load_templates, load_vocabulary
    from neurflow.world.clip import clip_spec
    from neurflow.world.ground_truth import World, purity

    name = entry.world.name
    log(f"{name}: embedding the groups' patches ({bundle.name})")
    world = World.load(entry.root)
    order = [world.part_names[k] for k in sorted(world.part_names)]
    clip = load_clip(clip_spec(bundle))
    vocab = load_vocabulary(str(bundle / "vocabulary.txt"))
    templates = load_templates(str(bundle / "templates.txt"))
    concepts = clip.vocabulary_matrix(vocab, templates)
    prompts = np.stack([clip.vocabulary_matrix(vocab, [t]) for t in templates])
    groups = []
    for circuit in entry.circuits.values():
        embed = PatchEmbedder(clip, PatchLoader(circuit, entry.images))
        ref_mix = mixture(embed(reference_pool(circuit, 256, 0)), concepts, clip.logit_scale)
        negatives = embed(random_boxes(circuit, 200, 17))
        paths = {ref.id: world.relative_path(ref.path, entry.images) for ref in circuit.images}

        def dominant(ex):
            return world.dominant_part(paths[ex.image], ex.box)

        for layer_index, _, group in circuit.iter_groups():
            patches = group_patches(circuit, layer_index, group)
            keep = {patch_key(e) for e in group.exemplars}
            used, held = split_holdout(patches, 0.2, zlib.crc32(group.id.encode()), keep=keep)
            shown = purity([dominant(e) for e in group.exemplars], order)
            behind = purity([dominant(p) for p in patches], order)
            reference = shown.majority_part if shown.majority_part and shown.purity * shown.n >= MIN_MAJORITY else None
            groups.append(GroupData(
                name, f"c{circuit.target.class_index}/{group.id}", embed(list(group.exemplars)), embed(used[:64]), embed(held),
                reference, mixed=shown.purity < 1.0 or behind.majority_part != shown.majority_part,
                ref_mixture=ref_mix, negatives=negatives,
                weights=np.asarray(activation_weights(circuit, layer_index, group, used[:64]), dtype=np.float64),
            ))
    suite = entry.world
    return WorldData(name, suite.role, arch, concepts, list(vocab.concepts), clip.logit_scale, groups,
                     entry.model.heldout_accuracy, json.loads((bundle / "metrics.json").read_text())["zero_shot_top1"], prompts)


# -- methods: a case (one group as each CLIP of a set sees it) -> (scores, features or a confidence) ---


@dataclass
class Case:
    """One group seen by every CLIP of a set: ``views[k]`` is CLIP k's world and group data."""

    gid: str
    reference: str | None
    mixed: bool
    views: list[tuple[WorldData, GroupData]]


def _clip_views(case: Case):
    from neurflow.labeler.evidence import ClipView

    return [ClipView(w.arch, w.concepts, w.logit_scale, g.exemplars, g.patches, g.weights, w.prompts) for w, g in case.views]


def _baseline(case: Case):
    """The five exemplars' mean cosine, summed over the set's CLIPs; confidence: their agreement."""
    from neurflow.labeler.scoring import mean_cosine_scores

    scores = sum(mean_cosine_scores(g.exemplars, w.concepts) for w, g in case.views)
    top = int(scores.argmax())
    best = np.concatenate([(g.exemplars @ w.concepts.T).argmax(1) for w, g in case.views])
    return scores, float((int((best == top).sum()) + 1) / (len(best) + 2))


def _evidence(weight: float, votes: str):
    """The labeler's pooled mosaic score at one grid setting; its 'confidence' is the feature dict."""
    def method(case: Case):
        from neurflow.labeler.evidence import combined_scores, features

        views = _clip_views(case)
        scores = combined_scores(views, weight, votes)
        return scores, features(views, int(np.argmax(scores)), weight, votes)
    return method


def _labeler(combination, candidates: int, weight: float, votes: str):
    """The labeler as ``judge`` labels: the pooled mosaic score, then the likeliest-right of its first
    ``candidates`` concepts under ``combination``; its 'confidence' is that label's feature dict."""
    def method(case: Case):
        from neurflow.labeler.evidence import combined_scores, rerank

        views = _clip_views(case)
        scores = combined_scores(views, weight, votes)
        order, values, _ = rerank(views, np.argsort(-scores, kind="stable"), combination, candidates, weight, votes)
        ranked = np.empty(len(order))
        ranked[order] = -np.arange(len(order), dtype=float)  # top_indices then returns ``order``
        return ranked, values
    return method


def _evaluate(cases: list[Case], method) -> list[dict]:
    from neurflow.labeler.evaluation.metrics import roc_auc
    from neurflow.labeler.scoring import top_indices

    rows = []
    for case in cases:
        scores, confidence = method(case)
        top = top_indices(scores, 5)
        w, g = case.views[0]
        row = {"gid": case.gid, "label": w.names[top[0]], "reference": case.reference, "mixed": case.mixed,
               "confidence": confidence}
        if case.reference is not None:
            row["top1"] = w.names[top[0]] == case.reference
            row["top5"] = case.reference in [w.names[k] for k in top]
        if len(g.held):
            label = w.concepts[top[0]]
            pos, neg = g.held @ label, g.negatives @ label
            row["retrieval_auc"] = roc_auc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
        rows.append(row)
    return rows


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _summary(rows: list[dict], baseline_rows: list[dict]) -> dict:
    """Top-1 (all, mixed, confident subset and its coverage), top-5, retrieval AUC, and the
    confidence's ECE and ROC-AUC, beside the baseline's top-1 on the same groups."""
    from neurflow.labeler.evaluation.metrics import expected_calibration_error, roc_auc
    from neurflow.labeler.evidence import is_uncertain_probability

    ref = [r for r in rows if "top1" in r]
    mixed = [r for r in ref if r["mixed"]]
    scored = [r for r in ref if isinstance(r["confidence"], float)]
    correct = [bool(r["top1"]) for r in scored]
    conf = [r["confidence"] for r in scored]
    sure = [r for r in scored if not is_uncertain_probability(r["confidence"])]
    return {
        "groups": len(rows), "with_reference": len(ref), "mixed": len(mixed),
        "top1": _mean(r["top1"] for r in ref), "top5": _mean(r["top5"] for r in ref),
        "top1_mixed": _mean(r["top1"] for r in mixed),
        "top1_confident": _mean(r["top1"] for r in sure), "coverage": len(sure) / len(scored) if scored else None,
        "retrieval_auc": _mean(r.get("retrieval_auc") for r in rows),
        "ece": expected_calibration_error(conf, correct, RELIABILITY_BINS) if scored else None,
        "confidence_auc": roc_auc(correct, conf) if scored and len(set(correct)) == 2 else None,
        "coverage_at_95": _coverage_at(conf, correct, 0.95),
        "baseline_top1": _mean(r["top1"] for r in baseline_rows if "top1" in r),
        "baseline_top1_mixed": _mean(r["top1"] for r in baseline_rows if "top1" in r and r["mixed"]),
    }


def _coverage_at(conf: list[float], correct: list[bool], precision: float) -> float | None:
    """The largest share of labels, taken most confident first, of which at least ``precision`` are
    right (what a threshold chosen after the fact could reach; the rule's own coverage is ``coverage``)."""
    if not conf:
        return None
    order = np.argsort(-np.asarray(conf), kind="stable")
    right = np.cumsum(np.asarray(correct, float)[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(right >= precision)
    return float((ok.max() + 1) / len(order)) if len(ok) else 0.0


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50, signs: tuple[int, ...] | None = None) -> np.ndarray:
    """Newton's method for L2-regularised logistic regression; x (n, k) without the intercept column.

    ``signs`` (+1, -1 or 0 per feature) constrains the direction of each coefficient: a feature whose
    fitted coefficient has the wrong sign is dropped (coefficient 0) and the rest refitted, until all
    agree. The confidence must not fall when more of a group's evidence agrees with its label, even if
    the dev labels it was fitted on happen to say so."""
    active = np.ones(x.shape[1], bool)
    while True:
        X = np.c_[np.ones(len(x)), x[:, active]]
        beta = np.zeros(X.shape[1])
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-X @ beta))
            grad = X.T @ (p - y) + l2 * np.r_[0.0, beta[1:]]
            hess = (X.T * (p * (1 - p))) @ X + l2 * np.diag(np.r_[0.0, np.ones(X.shape[1] - 1)])
            beta -= np.linalg.solve(hess, grad)
        full = np.zeros(x.shape[1] + 1)
        full[0] = beta[0]
        full[1:][active] = beta[1:]
        wrong = [i for i in np.flatnonzero(active) if signs is not None and signs[i] * full[1 + i] < 0]
        if not wrong:
            return full
        active[wrong] = False


def _fmt(v, pattern="{:.3f}") -> str:
    return "-" if v is None else pattern.format(v)


def _table(title: str, lines: list[tuple[str, str, dict]]) -> str:
    head = (f"  {'world / CLIPs / groups':<44} {'method':<22} {'n':>4} {'top-1':>6} {'base':>6} {'conf.top-1':>10} "
            f"{'cover':>6} {'AUC':>6} {'ECE':>6} {'mixed':>6}")
    out = [title, head]
    for where, method, s in lines:
        out.append(f"  {where:<44} {method:<22} {s['with_reference']:>4} {_fmt(s['top1']):>6} {_fmt(s['baseline_top1']):>6} "
                   f"{_fmt(s['top1_confident']):>10} {_fmt(s['coverage']):>6} {_fmt(s['confidence_auc']):>6} "
                   f"{_fmt(s['ece']):>6} {_fmt(s['top1_mixed']):>6}")
    return "\n".join(out)


def _reliability(rows: list[dict]) -> str:
    scored = [r for r in rows if "top1" in r]
    conf = np.array([r["confidence"] for r in scored])
    correct = np.array([float(r["top1"]) for r in scored])
    edges = np.linspace(0, 1, RELIABILITY_BINS + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, RELIABILITY_BINS - 1)
    out = ["  confidence bin   groups  mean confidence  accuracy"]
    for b in range(RELIABILITY_BINS):
        sel = which == b
        acc = correct[sel].mean() if sel.any() else None
        mean_conf = conf[sel].mean() if sel.any() else None
        bar = "#" * int(round(20 * acc)) if acc is not None else ""
        out.append(f"  [{edges[b]:.1f}, {edges[b + 1]:.1f})  {int(sel.sum()):>7}  {_fmt(mean_conf):>15}  {_fmt(acc):>8}  {bar}")
    return "\n".join(out)


#: L2 weight of the combination's fit: dev labels are a few thousand, and an unpenalised fit pushes the
#: coefficients towards separating the few hard cases perfectly (overconfident).
CALIBRATION_L2 = 1.0
#: Directions of the combination's features (``neurflow.labeler.evidence.CLIP_FEATURES``): more agreement
#: never lowers the confidence, a stronger second part never raises it.
CALIBRATION_SIGNS = {"exemplars": 1, "patches": 1, "margin": 1, "clips": 1, "prompts": 1, "split": -1, "top": 1,
                     "entropy": -1, "cosine": 1, "single": 0}


def _clip_sets(quality: str, own_arch: str | None = None) -> dict[str, list[str]]:
    """Set name -> towers: the world's own CLIP for ``good``; for a noisy quality each tower alone and
    both at once, or only the world's own tower when ``own_arch`` is given."""
    if quality == "good":
        return {"own": ["own"]}
    if own_arch is not None:
        return {own_arch: [own_arch]}
    return {"vit": ["vit"], "resnet": ["resnet"], "vit+resnet": ["vit", "resnet"]}


def _units(names: list[str], qualities: list[str], log, own_tower_only: bool = False) -> list[dict]:
    """Every (world, CLIP quality, CLIP set) with its engine and constructed mixed groups as cases."""
    from bench.mixed import constructed_mixed
    from neurflow.world.suite import SUITE

    units = []
    for name in names:
        own = SUITE[name].clip_arch if own_tower_only else None
        for quality in qualities:
            sets = _clip_sets(quality, own)
            views = {t: _collect(name, log, quality, None if t == "own" else t)
                     for t in dict.fromkeys(t for ts in sets.values() for t in ts)}
            first = next(iter(views.values()))
            # the constructed groups take the same patches under every CLIP (the first one orders the "sure" kinds)
            mixed = {t: constructed_mixed(w, order_by=first) for t, w in views.items()}
            for set_name, towers in sets.items():
                def cases(groups_of):
                    per_view = [groups_of(t) for t in towers]
                    return [Case(gs[0].gid, gs[0].reference, gs[0].mixed, [(views[t], g) for t, g in zip(towers, gs)])
                            for gs in zip(*per_view)]
                units.append({"world": first, "quality": quality, "clips": set_name,
                              "clip_top1": [views[t].clip_top1 for t in towers],
                              "sets": {"engine": cases(lambda t: views[t].groups), "mixed*": cases(lambda t: mixed[t])}})
    return units


def _unit_name(u: dict) -> str:
    w = u["world"]
    zero_shot = "/".join(f"{z:.2f}" for z in u["clip_top1"])
    return f"{w.name} ({'dev' if w.role == 'dev' else 'HELD-OUT'}) {u['quality']} {u['clips']} ({zero_shot})"


def _default_combination():
    from neurflow.labeler.evidence import COMBINATION_FILE, Combination

    return Combination.from_file(COMBINATION_FILE) if COMBINATION_FILE.is_file() else None


def run_section(args) -> dict:
    import torch

    from neurflow.labeler import scoring
    from neurflow.labeler.evaluation.metrics import expected_calibration_error, roc_auc
    from neurflow.labeler.evidence import CLIP_FEATURES, COMBINATION_FILE, RERANK_CANDIDATES, UNCERTAIN_BELOW, Combination
    from neurflow.world.suite import SUITE

    torch.set_num_threads(1)
    names = getattr(args, "label_worlds", None) or list(BENCH_WORLDS)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise SystemExit(f"unknown suite world(s) {unknown}; choose from {list(SUITE)}")
    qualities = list(dict.fromkeys(getattr(args, "clip_quality", None) or ["good"]))
    started = time.time()
    log = lambda line: print(f"  [{time.time() - started:5.0f}s] {line}", file=sys.stderr, flush=True)  # noqa: E731
    units = _units(names, qualities, log, getattr(args, "noisy_towers", "both") == "own")
    dev_index = [i for i, u in enumerate(units) if u["world"].role == "dev"]
    held_index = [i for i, u in enumerate(units) if u["world"].role != "dev"]
    dev = [units[i] for i in dev_index]
    print("worlds x CLIPs (single-part zero-shot top-1 of each CLIP of the set):")
    for u in units:
        w = u["world"]
        print(f"  {_unit_name(u):<52} {len(w.groups)} engine groups, {sum(g.reference is not None for g in w.groups)} with a "
              f"reference; {len(u['sets']['mixed*'])} constructed mixed groups")

    def run(u: dict, method) -> dict[str, list[dict]]:
        return {set_name: _evaluate(cases, method) for set_name, cases in u["sets"].items()}

    baseline = [run(u, _baseline) for u in units]
    # -- choose the grid setting on the dev units only --------------------------------------------------
    grid = {(wt, v): [run(u, _evidence(wt, v)) for u in units] for v in GRID_VOTES for wt in GRID_WEIGHTS}

    def dev_key(setting):
        rows = [r for i in dev_index for rs in grid[setting][i].values() for r in rs if "top1" in r]
        return (_mean(r["top1"] for r in rows) or 0, _mean(r["top1"] for r in rows if r["mixed"]) or 0)

    chosen = max(grid, key=dev_key)
    default = (scoring.MOSAIC_EXEMPLAR_WEIGHT, scoring.MOSAIC_EXEMPLAR_VOTES)
    print("\ndev units: top-1 of each grid setting (exemplar weight, exemplar votes), engine + mixed* pooled")
    for setting in grid:
        mark = " <- chosen" if setting == chosen else ""
        print(f"  w={setting[0]:g} {setting[1]:<5} top-1 {_fmt(dev_key(setting)[0])}, on mixed groups {_fmt(dev_key(setting)[1])}{mark}")
    print(f"  labeler's constants: w={default[0]:g} {default[1]} -> {'same' if chosen == default else 'DIFFERENT'}")
    # -- fit the combination on the dev units, labels of the labeler's setting ---------------------------
    # Round 1 on the mosaic score's first concepts; with re-ranking (RERANK_CANDIDATES > 1) round 2 on
    # the labels that round 1's combination chooses, since those are the labels it will score.
    def dev_data(per_unit: list) -> tuple[list, list]:
        feats, ys = [], []
        for i in dev_index:
            for rows in per_unit[i].values():
                for r in rows:
                    if "top1" in r:
                        feats.append([r["confidence"][f] for f in CLIP_FEATURES])
                        ys.append(float(r["top1"]))
        return feats, ys

    def fit(feats: list, ys: list, rounds: str):
        beta = fit_logistic(np.array(feats), np.array(ys), l2=CALIBRATION_L2, signs=tuple(CALIBRATION_SIGNS[f] for f in CLIP_FEATURES))
        return Combination(tuple(float(b) for b in beta), CLIP_FEATURES, {
            "worlds": sorted({u["world"].name for u in dev}), "clip_qualities": qualities,
            "clip_sets": sorted({u["clips"] for u in dev}), "labels": len(ys), "wrong": int(len(ys) - sum(ys)),
            "groups": "engine and constructed mixed (bench/mixed.py)", "l2": CALIBRATION_L2,
            "setting": {"exemplar_weight": default[0], "votes": default[1], "rerank_candidates": RERANK_CANDIDATES},
            "rounds": rounds, "by": "python -m bench.run labels --write-combination"})

    feats, ys = dev_data(grid[default]) if default in grid else ([], [])
    fitted = None
    if len(set(ys)) == 2:
        fitted = fit(feats, ys, "1: the mosaic score's first concepts")
        print(f"\n  combination fitted on dev, round 1 ({len(ys)} labels, {fitted.fitted_on['wrong']} wrong): "
              f"b = {[round(b, 3) for b in fitted.coefficients]} over (intercept, {', '.join(CLIP_FEATURES)})")
        if RERANK_CANDIDATES > 1:
            feats, ys = dev_data([run(u, _labeler(fitted, RERANK_CANDIDATES, *default)) for u in units])
            fitted = fit(feats, ys, f"2: the labels round 1 chose among the mosaic score's {RERANK_CANDIDATES} best")
            print(f"  round 2, on the labels round 1 chose among {RERANK_CANDIDATES} ({len(ys)} labels, "
                  f"{fitted.fitted_on['wrong']} wrong): b = {[round(b, 3) for b in fitted.coefficients]}")
        if getattr(args, "write_combination", False):
            COMBINATION_FILE.write_text(fitted.to_json())
            print(f"  written to {COMBINATION_FILE}")
    elif dev:
        print("\n  combination: the dev labels are all right (or all wrong): nothing to fit")
    shipped = _default_combination()
    if shipped is None and fitted is None:
        raise SystemExit(f"no combination to report with: {COMBINATION_FILE} is missing and no dev unit was run")
    shipped = shipped or fitted
    print(f"  labeler's combination: b = {list(shipped.coefficients)} (fitted on {', '.join(shipped.fitted_on.get('worlds', []))})")

    def scored(rows: list[dict], combination=shipped) -> list[dict]:
        return [{**r, "features": r["confidence"], "confidence": combination.probability(r["confidence"])} for r in rows]

    # -- how many of the mosaic score's best concepts the combination may choose between (dev only) -------
    judged = fitted or shipped
    print(f"\ndev units: the combination choosing between the mosaic score's k best concepts "
          f"(labeler: k = {RERANK_CANDIDATES})")
    reranked = {}
    for k in RERANK_GRID:
        reranked[k] = [run(u, _labeler(judged if k > 1 else shipped, k, *default)) for u in units]
        rows = [r for i in dev_index for rs in reranked[k][i].values() for r in rs if "top1" in r]
        print(f"  k={k}: top-1 {_fmt(_mean(r['top1'] for r in rows))}")
    # every unit is reported with the shipped combination, as the labeler labels
    labeled = (reranked[RERANK_CANDIDATES] if RERANK_CANDIDATES in reranked and (RERANK_CANDIDATES == 1 or judged is shipped)
               else [run(u, _labeler(shipped, RERANK_CANDIDATES, *default)) for u in units])
    ours = [{s: scored(rs) for s, rs in per_unit.items()} for per_unit in labeled]
    # -- the uncertainty rule on dev: what other thresholds would do ------------------------------------
    dev_rows = [r for i in dev_index for rs in ours[i].values() for r in rs if "top1" in r]
    if dev_rows:
        print("\ndev units: labels at or above a confidence threshold (the rule: uncertain below "
              f"{UNCERTAIN_BELOW:g})")
        for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            sure = [r for r in dev_rows if r["confidence"] >= t]
            print(f"  >= {t:.1f}: coverage {_fmt(len(sure) / len(dev_rows))}, top-1 {_fmt(_mean(r['top1'] for r in sure))}")
    # -- every unit: the labeler (shipped combination) beside the baseline ------------------------------
    summary: dict = {"chosen": list(chosen), "labeler_setting": list(default), "qualities": qualities,
                     "fitted_combination": None if fitted is None else json.loads(fitted.to_json()),
                     "shipped_combination": json.loads(shipped.to_json()), "units": []}
    lines = []
    for i, u in enumerate(units):
        entry = {"world": u["world"].name, "role": u["world"].role, "quality": u["quality"], "clips": u["clips"],
                 "clip_top1": u["clip_top1"], "sets": {}}
        for set_name in u["sets"]:
            s = _summary(ours[i][set_name], baseline[i][set_name])
            b = _summary(baseline[i][set_name], baseline[i][set_name])
            entry["sets"][set_name] = {"labeler": s, "baseline": b}
            lines.append((f"{_unit_name(u)} {set_name}"[:44], "labeler", s))
            lines.append(("", "baseline (5 exemplars)", b))
        summary["units"].append(entry)
    print()
    print(_table("every world x CLIP set: the labeler (pooled mosaic score, fitted combination) beside the baseline "
                 f"(confident: confidence >= {UNCERTAIN_BELOW:g})", lines))
    # -- pooled per quality and role -------------------------------------------------------------------
    pooled: dict = {}
    print("\npooled per role, CLIP quality and set (engine + mixed* groups)")
    for role, group in (("dev", dev_index), ("held-out", held_index)):
        for quality in qualities:
            for set_name in dict.fromkeys(units[i]["clips"] for i in group if units[i]["quality"] == quality):
                idx = [i for i in group if units[i]["quality"] == quality and units[i]["clips"] == set_name]
                if not idx:
                    continue
                rows = [r for i in idx for rs in ours[i].values() for r in rs]
                base = [r for i in idx for rs in baseline[i].values() for r in rs]
                s = _summary(rows, base)
                pooled[f"{role} {quality} {set_name}"] = s
                print(f"  {role:<8} {quality:<4} {set_name:<10} n {s['with_reference']:>4}  top-1 {_fmt(s['top1'])} (baseline "
                      f"{_fmt(s['baseline_top1'])}, {_fmt((s['top1'] or 0) - (s['baseline_top1'] or 0), '{:+.3f}')}), confident "
                      f"{_fmt(s['top1_confident'])} at coverage {_fmt(s['coverage'])}, ROC-AUC {_fmt(s['confidence_auc'])}, "
                      f"ECE {_fmt(s['ece'])}, coverage at 95 % right {_fmt(s['coverage_at_95'])}")
    summary["pooled"] = pooled
    # -- per world, CLIP quality and set (engine + mixed* pooled), the labeler beside the baseline ---------
    per_world: dict = {}
    print("\nper world, CLIP quality and set (engine + mixed* groups): labeler | baseline")
    print(f"  {'world / CLIPs':<46} {'n':>4} {'top-1':>6} {'conf.top-1':>10} {'cover':>6} {'AUC':>6} {'ECE':>6} {'cov@95':>6} |"
          f" {'top-1':>6} {'AUC':>6} {'ECE':>6}")
    for i, u in enumerate(units):
        rows = [r for rs in ours[i].values() for r in rs]
        base = [r for rs in baseline[i].values() for r in rs]
        s, b = _summary(rows, base), _summary(base, base)
        per_world[_unit_name(u)] = {"labeler": s, "baseline": b}
        print(f"  {_unit_name(u)[:46]:<46} {s['with_reference']:>4} {_fmt(s['top1']):>6} {_fmt(s['top1_confident']):>10} "
              f"{_fmt(s['coverage']):>6} {_fmt(s['confidence_auc']):>6} {_fmt(s['ece']):>6} {_fmt(s['coverage_at_95']):>6} |"
              f" {_fmt(b['top1']):>6} {_fmt(b['confidence_auc']):>6} {_fmt(b['ece']):>6}")
    summary["per_world"] = per_world
    held_rows = [r for i in held_index for rs in ours[i].values() for r in rs]
    if held_rows:
        print("\nreliability of the labeler's confidence, held-out units pooled (every quality and set):")
        print(_reliability(held_rows))
    if getattr(args, "label_captions", False):
        summary["caption"] = caption_section([_collect(n, log) for n in names], log)
    if getattr(args, "label_json", None):
        Path(args.label_json).write_text(json.dumps(summary, indent=1))
    return summary


def caption_rows(w: WorldData, labels: dict[str, str | None]) -> dict:
    """Top-1 of caption-derived labels (group id -> the caption's short label, None when captioning
    failed) against the same references as the CLIP labels, next to the baseline's top-1 on the
    same groups. A caption is one label, so it has no top-5; a label outside the world's vocabulary
    counts as wrong, like a CLIP label naming another concept."""
    ref = [g for g in w.groups if g.reference is not None]
    right = [labels.get(g.gid) == g.reference for g in ref]
    baseline = [r["top1"] for r in _evaluate([Case(g.gid, g.reference, g.mixed, [(w, g)]) for g in ref], _baseline)]
    return {"groups": len(w.groups), "with_reference": len(ref), "top1": _mean(right), "baseline_top1": _mean(baseline),
            "captioned": sum(labels.get(g.gid) is not None for g in w.groups),
            "in_vocabulary": _mean(labels.get(g.gid) in w.names for g in w.groups)}


def caption_engine_groups(entry, folder: Path, image_size: int, log: Callable[[str], None]) -> dict:
    """Group id -> the caption of every engine group of a built suite world by the world captioner in
    ``folder``, through the labeler's own captioning path (group request, transformers back end,
    caption parsing, rule-based summary label); ``None`` where captioning failed."""
    from neurflow.labeler.captioning import CaptionerError, caption_group
    from neurflow.labeler.captioning.transformers_backend import TransformersCaptioner
    from neurflow.labeler.config import CaptionerSpec
    from neurflow.labeler.patches import PatchLoader

    captioner = TransformersCaptioner(folder, max_new_tokens=6)
    # One group's own mosaic per request: a plain captioner gets no text, so the multi-level circuit
    # prompt would only put other groups' patches into its image.
    spec = CaptionerSpec(backend="transformers", model=str(folder), max_images=5, image_size=image_size,
                         circuit_prompt=None, max_new_tokens=6)
    results = {}
    for circuit in entry.circuits.values():
        loader = PatchLoader(circuit, entry.images)
        for _, _, group in circuit.iter_groups():
            gid = f"c{circuit.target.class_index}/{group.id}"
            try:
                results[gid] = caption_group(captioner, loader, group, [], spec)
            except CaptionerError as exc:
                log(f"{entry.world.name} {gid}: no caption: {exc}")
                results[gid] = None
    return results


def caption_section(worlds: list[WorldData], log: Callable[[str], None]) -> dict:
    """Caption every engine group of every world with a captioner trained on the suite's dev worlds
    only (:mod:`neurflow.world.captioner`), through the labeler's own captioning path
    (:func:`caption_engine_groups`), and score the labels."""
    from neurflow.world.captioner import CaptionerTrainConfig, ensure_world_captioner
    from neurflow.world.suite import SUITE, ensure_suite_world

    dev_names = [n for n, s in SUITE.items() if s.role == "dev"]
    config = CaptionerTrainConfig()
    folder = ensure_world_captioner([ensure_suite_world(n, log=log).root for n in dev_names], config, log=log)
    metrics = json.loads((folder / "metrics.json").read_text())
    out = {"captioner": folder.name, "trained_on": dev_names, "fresh_mosaic_top1": metrics["fresh_mosaic_top1"], "worlds": {}}
    print(f"\ncaption-derived labels (engine groups): captioner {folder.name}, trained on {', '.join(dev_names)} only "
          f"({metrics['parameters']:,} parameters, {metrics['train_seconds']:.0f} s; top-1 {metrics['fresh_mosaic_top1']:.3f} "
          "on fresh train-split mosaics)")
    print(f"  {'world':<26} {'method':<22} {'groups':>6} {'top-1':>6} {'in vocab':>8} {'baseline top-1':>14}")
    for w in worlds:
        captions = caption_engine_groups(ensure_suite_world(w.name, log=log), folder, config.image_size, log)
        labels = {gid: r.label if r is not None else None for gid, r in captions.items()}
        row = out["worlds"][w.name] = {**caption_rows(w, labels), "labels": labels}
        tag = f"{w.name} ({'dev' if w.role == 'dev' else 'HELD-OUT'}) engine"
        print(f"  {tag:<26} {'caption (dev-trained)':<22} {row['with_reference']:>6} {_fmt(row['top1']):>6} "
              f"{_fmt(row['in_vocabulary']):>8} {_fmt(row['baseline_top1']):>14}")
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_section(parser.parse_args())
