"""``python -m bench.run labels``: label quality on worlds the labeler was tuned on, and on others.

Every world of :data:`neurflow.world.suite.SUITE` has its own network, its own CLIP (ViT or ResNet
image tower, trained only on that world) and engine circuits of two classes. Each group's truth is
what its mosaic shows: the part that dominates the majority of its five display exemplars (part
masks), when at least 3 of 5 do; groups without such a majority have no reference. A group is
*mixed* when its exemplars are not all that part, or when its other top patches are mostly another.

Methods (all from the same CLIP embeddings of the same patches):

* ``baseline``: the concept with the highest mean cosine similarity to the five exemplars;
* ``contrastive``: contrastive score over all top patches (reference term 1);
* ``mosaic w=.. l=.. votes``: the mosaic score (:func:`neurflow.labeler.scoring.mosaic_scores`) on a
  grid of exemplar weights, reference weights and exemplar votes (``hard``: each exemplar's best
  concept counted once; ``soft``: their zero-shot distributions averaged).
* ``caption``: the short label made from a caption of the group's mosaic by a tiny captioner trained
  on the dev worlds only (:mod:`neurflow.world.captioner`), through the labeler's captioning path;
  engine groups only (``--no-captions`` leaves it out).

Every world is measured on two sets of groups: the engine's own (``engine``) and mixed groups
constructed from its pure ones (``mixed*``, :mod:`bench.mixed`), where labels can be wrong.

The grid is compared on the *dev* worlds only (both sets); the best setting there (top-1, then top-1
on mixed groups, then retrieval AUC) is the one reported on the *held-out* worlds, next to the
baseline and the contrastive score. The confidence's logistic calibration is fitted on the dev worlds'
labels of every grid setting (the chosen one alone may make no mistake to learn from) and checked on
the held-out worlds' labels of the chosen setting and of every grid setting (ECE and ROC-AUC, before and
after the doubt cap). Columns: top-1 / top-5 against the mosaic's part, top-1 on mixed groups,
held-out retrieval ROC-AUC (the group's held-out top patches against random patches of the run,
ranked by similarity to the label), and the confidence's ECE and ROC-AUC against correctness; every
row repeats the baseline's top-1 on the same groups.
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

GRID_WEIGHTS = (1.0, 0.7, 0.5)
GRID_CONTRAST = (0.0, 0.3, 1.0)
GRID_VOTES = ("soft", "hard")  # how the exemplars vote (neurflow.labeler.scoring.MOSAIC_EXEMPLAR_VOTES)
MIN_MAJORITY = 3  # of 5 exemplars: below, the mosaic shows no one part and the group has no reference
RELIABILITY_BINS = 5


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


def add_arguments(parser) -> None:
    from neurflow.world.suite import CLIP_QUALITIES

    parser.add_argument("--label-worlds", nargs="+", metavar="WORLD", help="suite worlds (default: all)")
    parser.add_argument("--label-json", metavar="PATH", help="also write the label table as JSON here")
    parser.add_argument("--no-captions", dest="label_captions", action="store_false",
                        help="skip the caption row (a tiny captioner trained on the dev worlds; minutes on first use)")
    parser.add_argument("--clip-quality", default="good", choices=["good", *CLIP_QUALITIES],
                        help="label with each world's noisy CLIP of this quality instead of its own ('good'; "
                             "q90, q80, q65: neurflow.world.suite.CLIP_QUALITIES; trained on first use)")
    parser.add_argument("--clip-tower", default="vit", choices=["vit", "resnet"],
                        help="the image tower of the noisy CLIP (--clip-quality other than 'good')")


def _cache_paths(entry, bundle: Path) -> tuple[Path, Path]:
    stem = entry.model.directory / f"label-bench-{bundle.name}-{'-'.join(map(str, sorted(entry.circuits)))}"
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def _save(w: WorldData, entry, bundle: Path) -> None:
    """Embeddings and truth of every group, so that a second run only scores (no pickles: arrays + JSON)."""
    arrays, meta = {"concepts": w.concepts}, []
    for i, g in enumerate(w.groups):
        for key in ("exemplars", "patches", "held", "ref_mixture", "negatives"):
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
                            m["reference"], m["mixed"], arrays[f"{i}_ref_mixture"], arrays[f"{i}_negatives"])
                  for i, m in enumerate(meta["groups"])]
        concepts = arrays["concepts"]
    suite = entry.world
    return WorldData(suite.name, suite.role, arch, concepts, meta["names"], meta["logit_scale"], groups,
                     meta["heldout_accuracy"], meta["clip_top1"])


def _collect(name: str, log: Callable[[str], None], quality: str = "good", tower: str | None = None) -> WorldData:
    """A world's groups embedded by its own CLIP (``good``), or by its noisy CLIP of ``quality`` and ``tower``."""
    from neurflow.world.suite import ensure_suite_world

    entry = ensure_suite_world(name, log=log, clip_qualities=[quality])
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
    from neurflow.labeler.patches import PatchLoader, group_patches, patch_key, random_boxes, reference_pool, split_holdout
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
    concepts = clip.vocabulary_matrix(vocab, load_templates(str(bundle / "templates.txt")))
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
            ))
    suite = entry.world
    return WorldData(name, suite.role, arch, concepts, list(vocab.concepts), clip.logit_scale, groups,
                     entry.model.heldout_accuracy, json.loads((bundle / "metrics.json").read_text())["zero_shot_top1"])


# -- methods: (world, group) -> (scores over the vocabulary, confidence parts or a confidence) ---------

def _baseline(w: WorldData, g: GroupData):
    from neurflow.labeler.scoring import mean_cosine_scores, patch_agreement

    scores = mean_cosine_scores(g.exemplars, w.concepts)
    return scores, patch_agreement(g.exemplars @ w.concepts.T, int(scores.argmax()))


def _contrastive(w: WorldData, g: GroupData):
    from neurflow.labeler.scoring import contrastive_scores, patch_agreement, per_patch_contrastive

    scores = contrastive_scores(g.patches, g.ref_mixture, w.concepts, w.logit_scale, 1.0)
    per_patch = per_patch_contrastive(g.patches, g.ref_mixture, w.concepts, w.logit_scale, 1.0)
    return scores, patch_agreement(per_patch, int(scores.argmax()))


def _mosaic(weight: float, contrast: float, votes: str, coefficients=None):
    def method(w: WorldData, g: GroupData):
        from neurflow.labeler.scoring import calibrated_confidence, confidence_parts, mosaic_scores

        scores = mosaic_scores(g.exemplars, g.patches, g.ref_mixture, w.concepts, w.logit_scale, weight, contrast, votes)
        parts = confidence_parts(g.exemplars, g.patches, w.concepts, w.logit_scale, int(scores.argmax()), weight)
        return scores, (parts if coefficients is None else calibrated_confidence(parts, coefficients))
    return method


def _evaluate(w: WorldData, method, groups: list[GroupData] | None = None) -> list[dict]:
    from neurflow.labeler.scoring import top_indices
    from neurflow.labeler.evaluation.metrics import roc_auc

    rows = []
    for g in w.groups if groups is None else groups:
        scores, confidence = method(w, g)
        top = top_indices(scores, 5)
        row = {"gid": g.gid, "label": w.names[top[0]], "reference": g.reference, "mixed": g.mixed, "confidence": confidence}
        if g.reference is not None:
            row["top1"] = w.names[top[0]] == g.reference
            row["top5"] = g.reference in [w.names[k] for k in top]
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
    from neurflow.labeler.evaluation.metrics import expected_calibration_error, roc_auc

    ref = [r for r in rows if "top1" in r]
    mixed = [r for r in ref if r["mixed"]]
    scored = [r for r in ref if isinstance(r["confidence"], float)]
    correct = [bool(r["top1"]) for r in scored]
    conf = [r["confidence"] for r in scored]
    return {
        "groups": len(rows), "with_reference": len(ref), "mixed": len(mixed),
        "top1": _mean(r["top1"] for r in ref), "top5": _mean(r["top5"] for r in ref),
        "top1_mixed": _mean(r["top1"] for r in mixed),
        "retrieval_auc": _mean(r.get("retrieval_auc") for r in rows),
        "ece": expected_calibration_error(conf, correct, RELIABILITY_BINS) if scored else None,
        "confidence_auc": roc_auc(correct, conf) if scored else None,
        "baseline_top1": _mean(r["top1"] for r in baseline_rows if "top1" in r),
        "baseline_top1_mixed": _mean(r["top1"] for r in baseline_rows if "top1" in r and r["mixed"]),
    }


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50, signs: tuple[int, ...] | None = None) -> np.ndarray:
    """Newton's method for L2-regularised logistic regression; x (n, k) without the intercept column.

    ``signs`` (+1, -1 or 0 per feature) constrains the direction of each coefficient: a feature whose
    fitted coefficient has the wrong sign is dropped (coefficient 0) and the rest refitted, until all
    agree. The confidence must not fall when more of a group's patches agree with its label, even if
    the labels it was fitted on (a grid of methods, some following the patches into error) say so."""
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
    head = (f"  {'world':<34} {'method':<26} {'groups':>6} {'top-1':>6} {'top-5':>6} {'mixed top-1':>14} {'ret.AUC':>7} "
            f"{'ECE':>6} {'conf.AUC':>8} {'baseline top-1':>14} {'(mixed)':>7}")
    out = [title, head]
    for world, method, s in lines:
        mixed = f"{_fmt(s['top1_mixed'])} ({s['mixed']})"
        out.append(f"  {world:<34} {method:<26} {s['with_reference']:>6} {_fmt(s['top1']):>6} {_fmt(s['top5']):>6} {mixed:>14} "
                   f"{_fmt(s['retrieval_auc']):>7} {_fmt(s['ece']):>6} {_fmt(s['confidence_auc']):>8} {_fmt(s['baseline_top1']):>14} "
                   f"{_fmt(s['baseline_top1_mixed']):>7}")
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


#: L2 weight of the confidence calibration fit: the dev worlds hold few wrong labels, and an unpenalised
#: fit on them pushes the coefficients towards separating those few perfectly (overconfident).
CALIBRATION_L2 = 1.0
#: Directions of the calibration's features (``ConfidenceParts.features``): more agreement and a wider
#: margin never lower the confidence, a stronger second part never raises it.
CALIBRATION_SIGNS = (1, 1, 1, -1)


def _calibration_rows(rows: list[dict], coefficients) -> tuple[list[float], list[float], list[bool]]:
    """(capped confidence, uncapped probability, correct) of rows whose confidence is ConfidenceParts."""
    from neurflow.labeler.scoring import calibrated_confidence, calibrated_probability

    ref = [r for r in rows if "top1" in r]
    return ([calibrated_confidence(r["confidence"], coefficients) for r in ref],
            [calibrated_probability(r["confidence"], coefficients) for r in ref], [bool(r["top1"]) for r in ref])


def _default_score() -> str:
    import msgspec

    from neurflow.core.circuit import LabelingSettings

    return next(f.default for f in msgspec.structs.fields(LabelingSettings) if f.name == "score")


def run_section(args) -> dict:
    import torch

    from bench.mixed import constructed_mixed
    from neurflow.labeler import scoring
    from neurflow.labeler.evaluation.metrics import expected_calibration_error, roc_auc
    from neurflow.world.suite import SUITE

    torch.set_num_threads(1)
    names = getattr(args, "label_worlds", None) or list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise SystemExit(f"unknown suite world(s) {unknown}; choose from {list(SUITE)}")
    started = time.time()
    log = lambda line: print(f"  [{time.time() - started:5.0f}s] {line}", file=sys.stderr, flush=True)  # noqa: E731
    quality = getattr(args, "clip_quality", "good")
    worlds = [_collect(n, log, quality, getattr(args, "clip_tower", None)) for n in names]
    if quality != "good":
        print(f"CLIPs: every world's noisy {quality} CLIP ({getattr(args, 'clip_tower', 'vit')} tower), not its own")
    dev = [w for w in worlds if w.role == "dev"]
    held = [w for w in worlds if w.role != "dev"]
    # Two sets of groups per world: the engine's own, and mixed groups constructed from its pure ones.
    sets = {w.name: {"engine": w.groups, "mixed*": constructed_mixed(w)} for w in worlds}
    print("worlds:")
    for w in worlds:
        n_mixed = sum(g.mixed for g in w.groups if g.reference)
        print(f"  {w.name:<10} {w.role:<8} CLIP {w.arch:<6} (zero-shot {w.clip_top1:.3f}), resnet18 held-out acc "
              f"{_fmt(w.heldout_accuracy)}, {len(w.groups)} groups, {sum(g.reference is not None for g in w.groups)} with a "
              f"reference, {n_mixed} of them mixed; {len(sets[w.name]['mixed*'])} constructed mixed groups (mixed*)")

    def run(w: WorldData, method) -> dict[str, list[dict]]:
        return {name: _evaluate(w, method, groups) for name, groups in sets[w.name].items()}

    baseline = {w.name: run(w, _baseline) for w in worlds}
    # -- choose the mosaic setting on the dev worlds only (engine and constructed groups) --------------
    grid = {(wt, c, v): {w.name: run(w, _mosaic(wt, c, v)) for w in worlds}
            for v in GRID_VOTES for wt in GRID_WEIGHTS for c in GRID_CONTRAST}

    def dev_key(setting):
        rows = [r for w in dev for rs in grid[setting][w.name].values() for r in rs if "top1" in r]
        mixed = [r for r in rows if r["mixed"]]
        return (_mean(r["top1"] for r in rows) or 0, _mean(r["top1"] for r in mixed) or 0,
                _mean(r.get("retrieval_auc") for w in dev for r in grid[setting][w.name]["engine"]) or 0)

    chosen = max(grid, key=dev_key)
    # -- fit the confidence calibration on the dev worlds: every grid setting's labels, so that wrong
    #    labels exist to learn from (the chosen setting alone may label every dev group right) ---------
    feats, ys = [], []
    for setting in grid:
        for w in dev:
            for rows in grid[setting][w.name].values():
                for r in rows:
                    if "top1" in r:
                        feats.append(r["confidence"].features())
                        ys.append(float(r["top1"]))
    fitted = (fit_logistic(np.array(feats), np.array(ys), l2=CALIBRATION_L2, signs=CALIBRATION_SIGNS)
              if len(set(ys)) == 2 else None)
    default = (scoring.MOSAIC_EXEMPLAR_WEIGHT, scoring.MOSAIC_CONTRAST, scoring.MOSAIC_EXEMPLAR_VOTES)
    constants = tuple(scoring.CONFIDENCE_COEFFICIENTS)
    labeler_default = _default_score()
    mosaic_name = f"mosaic w={default[0]:g} l={default[1]:g} {default[2]}"
    methods = {
        "baseline (5 exemplars)": _baseline,
        "contrastive" + (" (default)" if labeler_default == "contrastive" else ""): _contrastive,
        mosaic_name + (" (default)" if labeler_default == "mosaic" else ""): _mosaic(*default, constants),
    }
    results = {w.name: {m: run(w, f) for m, f in methods.items()} for w in worlds}

    lines = []
    for w in dev:
        for (wt, c, v), per_world in grid.items():
            mark = " <-" if (wt, c, v) == chosen else ""
            for set_name, rows in per_world[w.name].items():
                lines.append((f"{w.name} (dev) {set_name}", f"mosaic w={wt:g} l={c:g} {v}{mark}"[:26],
                              _summary(rows, baseline[w.name][set_name])))
    if not dev:
        print("\n  no dev world in this run: nothing is chosen or calibrated, the labeler's constants are reported as they are")
    print()
    print(_table("dev worlds: the mosaic grid (confidence: see the calibration below)", [
        (wn, m, {**s, "ece": None, "confidence_auc": None}) for wn, m, s in lines]))
    print(f"\n  chosen on dev ({', '.join(w.name for w in dev) or 'none'}): exemplar weight {chosen[0]:g}, reference weight {chosen[1]:g}, "
          f"{chosen[2]} exemplar votes; labeler's mosaic constants: {default[0]:g}, {default[1]:g}, {default[2]} -> "
          f"{'same' if tuple(chosen) == default else 'DIFFERENT'}")
    if fitted is not None:
        print(f"  confidence calibration fitted on dev ({len(ys)} labels of the grid, {int(len(ys) - sum(ys))} wrong): "
              f"b = {np.round(fitted, 2).tolist()}; labeler constants: {list(constants)}")
    elif dev:
        print("  confidence calibration: the dev labels are all right (or all wrong): nothing to fit")

    summary: dict = {"chosen": list(chosen), "fitted_coefficients": None if fitted is None else fitted.tolist(),
                     "constants": list(constants), "worlds": {}}
    lines = []
    for w in worlds:
        summary["worlds"][w.name] = {"role": w.role, "arch": w.arch, "sets": {}}
        for set_name in sets[w.name]:
            tag = f"{w.name} ({'dev' if w.role == 'dev' else 'HELD-OUT'}, {w.arch}) {set_name}"
            per_set = summary["worlds"][w.name]["sets"][set_name] = {}
            for m in methods:
                s = _summary(results[w.name][m][set_name], baseline[w.name][set_name])
                per_set[m] = s
                lines.append((tag, m[:26], s))
    print()
    print(_table(f"all worlds: baseline, contrastive, mosaic; the labeler's default is {labeler_default!r} "
                 "(confidence as the labeler computes it)", lines))

    # -- calibration on held-out worlds: the mosaic's labels, and every grid setting's (wrong labels exist)
    name = next(m for m in methods if m.startswith(mosaic_name))
    calibration = {}
    if held:
        grid_rows = [r for setting in grid for w in held for rows in grid[setting][w.name].values() for r in rows]
        print("\nconfidence on the held-out worlds (engine + mixed* groups)")
        print(f"  {'labels':<44} {'n':>5} {'wrong':>5} {'ECE':>6} {'ROC-AUC':>7} {'ECE uncapped':>12} {'ROC-AUC uncapped':>16}")
        for label, rows in ((mosaic_name,
                             [r for w in held for rs in grid[default][w.name].values() for r in rs] if default in grid else []),
                            ("every grid setting pooled", grid_rows)):
            if not rows:
                continue
            capped, raw, correct = _calibration_rows(rows, constants)
            both = len(set(correct)) == 2
            stats = {"n": len(correct), "wrong": correct.count(False),
                     "ece": expected_calibration_error(capped, correct, RELIABILITY_BINS),
                     "roc_auc": roc_auc(correct, capped) if both else None,
                     "ece_uncapped": expected_calibration_error(raw, correct, RELIABILITY_BINS),
                     "roc_auc_uncapped": roc_auc(correct, raw) if both else None}
            calibration[label] = stats
            print(f"  {label:<44} {stats['n']:>5} {stats['wrong']:>5} {_fmt(stats['ece']):>6} {_fmt(stats['roc_auc']):>7} "
                  f"{_fmt(stats['ece_uncapped']):>12} {_fmt(stats['roc_auc_uncapped']):>16}")
    summary["heldout_calibration"] = calibration

    pooled = [r for w in held for rows in results[w.name][name].values() for r in rows]
    if pooled:
        print(f"\nreliability of the {mosaic_name} confidence, held-out worlds pooled, engine + mixed* "
              f"(uncertain below {scoring.UNCERTAIN_BELOW}):")
        print(_reliability(pooled))
        ref = [r for r in pooled if "top1" in r]
        low = [r for r in ref if r["confidence"] < scoring.UNCERTAIN_BELOW]
        high = [r for r in ref if r["confidence"] >= scoring.UNCERTAIN_BELOW]
        print(f"  marked uncertain: {len(low)} of {len(ref)} groups, accuracy {_fmt(_mean(r['top1'] for r in low))}; "
              f"the others: accuracy {_fmt(_mean(r['top1'] for r in high))}")
        # The doubt rule is a detector of mixed groups: how many of each kind it marks (all groups, with
        # or without a reference; a constructed group's kind is the end of its id, see bench/mixed.py).
        def kind(r):
            return r["gid"].split(" ", 1)[1] if "+" in r["gid"] else ("engine, mixed" if r["mixed"] else "engine, pure")

        flagged: dict[str, list[int]] = {}
        for r in pooled:
            counts = flagged.setdefault(kind(r), [0, 0])
            counts[0] += r["confidence"] < scoring.UNCERTAIN_BELOW
            counts[1] += 1
        print("  marked uncertain, by kind of group: " + "; ".join(f"{k} {a} of {n}" for k, (a, n) in flagged.items()))
        summary["heldout_marked_uncertain"] = flagged
    # The rule for the default: it must never score below the baseline's top-1, on any world or set.
    verdicts = {}
    for m in methods:
        if m.startswith("baseline"):
            continue
        below = [(w.name, set_name) for w in worlds for set_name, per_set in summary["worlds"][w.name]["sets"].items()
                 if (per_set[m]["top1"] or 0) < (per_set[m]["baseline_top1"] or 0)]
        above = [(w.name, set_name) for w in worlds for set_name, per_set in summary["worlds"][w.name]["sets"].items()
                 if (per_set[m]["top1"] or 0) > (per_set[m]["baseline_top1"] or 0)]
        verdicts[m] = {"below_baseline": below, "above_baseline": above}
        print(f"\n{m}: below the baseline's top-1 on {below or 'no world'}; above it on {above or 'no world'}")
    summary["versus_baseline"] = verdicts
    # Callers that build their own namespace (tests with constructed worlds) have no images to caption.
    if getattr(args, "label_captions", False):
        summary["caption"] = caption_section(worlds, log)
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
    baseline = [r["top1"] for r in _evaluate(w, _baseline, ref)]
    return {"groups": len(w.groups), "with_reference": len(ref), "top1": _mean(right), "baseline_top1": _mean(baseline),
            "captioned": sum(labels.get(g.gid) is not None for g in w.groups),
            "in_vocabulary": _mean(labels.get(g.gid) in w.names for g in w.groups)}


def caption_section(worlds: list[WorldData], log: Callable[[str], None]) -> dict:
    """Caption every engine group of every world with a captioner trained on the suite's dev worlds
    only (:mod:`neurflow.world.captioner`), through the labeler's own captioning path (group request,
    transformers back end, caption parsing, rule-based summary label), and score the labels."""
    from neurflow.labeler.captioning import CaptionerError, caption_group
    from neurflow.labeler.captioning.transformers_backend import TransformersCaptioner
    from neurflow.labeler.config import CaptionerSpec
    from neurflow.labeler.patches import PatchLoader
    from neurflow.world.captioner import CaptionerTrainConfig, ensure_world_captioner
    from neurflow.world.suite import SUITE, ensure_suite_world

    dev_names = [n for n, s in SUITE.items() if s.role == "dev"]
    config = CaptionerTrainConfig()
    folder = ensure_world_captioner([ensure_suite_world(n, log=log).root for n in dev_names], config, log=log)
    metrics = json.loads((folder / "metrics.json").read_text())
    captioner = TransformersCaptioner(folder, max_new_tokens=6)
    # One group's own mosaic per request: a plain captioner gets no text, so the multi-level circuit
    # prompt would only put other groups' patches into its image.
    spec = CaptionerSpec(backend="transformers", model=str(folder), max_images=5, image_size=config.image_size,
                         circuit_prompt=None, max_new_tokens=6)
    out = {"captioner": folder.name, "trained_on": dev_names, "fresh_mosaic_top1": metrics["fresh_mosaic_top1"], "worlds": {}}
    print(f"\ncaption-derived labels (engine groups): captioner {folder.name}, trained on {', '.join(dev_names)} only "
          f"({metrics['parameters']:,} parameters, {metrics['train_seconds']:.0f} s; top-1 {metrics['fresh_mosaic_top1']:.3f} "
          "on fresh train-split mosaics)")
    print(f"  {'world':<26} {'method':<22} {'groups':>6} {'top-1':>6} {'in vocab':>8} {'baseline top-1':>14}")
    for w in worlds:
        entry = ensure_suite_world(w.name, log=log)
        labels: dict[str, str | None] = {}
        for circuit in entry.circuits.values():
            loader = PatchLoader(circuit, entry.images)
            for _, _, group in circuit.iter_groups():
                gid = f"c{circuit.target.class_index}/{group.id}"
                try:
                    labels[gid] = caption_group(captioner, loader, group, [], spec).label
                except CaptionerError as exc:
                    log(f"{w.name} {gid}: no caption: {exc}")
                    labels[gid] = None
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
