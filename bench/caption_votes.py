"""``python -m bench.run captions``: the caption's words as one more vote on a group's label.

Every world of the label suite gets captioners of its own, trained on its train split only, as its
CLIPs are (:mod:`neurflow.world.captioner`): a clean one and noisy ones that learn some parts under
another part's name, and one that names them in other words (``--captioner-quality``;
:data:`CAPTIONER_QUALITIES`). Each engine group is
captioned through the labeler's captioning path (its five exemplars as one mosaic, the
``transformers`` back end, caption parsing, the rule-based short label), and the caption's words are
read onto the vocabulary by the CLIPs' own text towers (:func:`neurflow.labeler.evidence.caption_vote`).

Methods, on the engine groups of every (world, CLIP quality, CLIP set, captioner quality) (the
constructed mixed groups of :mod:`bench.labels` are made of embeddings and have no images to caption):

* ``baseline``: the five exemplars' mean cosine (summed over the set's CLIPs);
* ``labeler``: today's labeler without a captioner (the shipped combination);
* ``caption``: the caption's first concept alone;
* ``captioned``: the labeler with the caption's vote, as ``label_circuit`` labels: the shipped
  captioned combination (``labeler/combination-captioned.json``) and
  :data:`neurflow.labeler.evidence.CAPTION_CANDIDATE`.

On the dev worlds only, two ways of using the vote are fitted and compared: ``feature`` (the label
stays the mosaic score's first concept; the combination reads the caption for its confidence) and
``candidate`` (the combination chooses between the mosaic score's first concept and the caption's).
Each is fitted on the dev units (every CLIP quality and set, every captioner quality);
``--write-captioned-combination`` ships the chosen one.
Held-out worlds are only reported.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.labels import (
    CALIBRATION_L2,
    CALIBRATION_SIGNS,
    BENCH_WORLDS,
    Case,
    _baseline,
    _clip_views,
    _evaluate,
    _fmt,
    _mean,
    _summary,
    _units,
    caption_engine_groups,
    fit_logistic,
)

#: The label bench's worlds and the held-out worlds built after the caption vote's freezes
#: (docs/label-quality.md#the-captions-words-as-a-vote).
CAPTION_WORLDS = (*BENCH_WORLDS, "shapes3-seed1", "shapes3-cluttered-seed1", "shapes3-uneven-seed1")

#: Captioner quality -> its training: ``c70`` learns 30 % of a world's parts under another part's name;
#: ``reworded`` names every part right but in other words than the vocabulary's (its words reversed).
CAPTIONER_QUALITIES = {"clean": {}, "c70": {"confused_share": 0.3}, "reworded": {"wording": "reversed"}}
#: The captioners the captioned combination is fitted with (the others are only reported).
FIT_CAPTIONERS = ("clean", "c70")
#: The caption feature never lowers the confidence of the concept it votes for.
CAPTION_SIGNS = {**CALIBRATION_SIGNS, "caption": 1}
METHODS = ("feature", "candidate")


def add_arguments(parser) -> None:
    parser.add_argument(
        "--captioner-quality",
        nargs="+",
        default=list(CAPTIONER_QUALITIES),
        choices=list(CAPTIONER_QUALITIES),
        help="captioners of each world: clean, or with some parts learned under another name",
    )
    parser.add_argument(
        "--write-captioned-combination",
        action="store_true",
        help="write the captioned combination fitted on the dev worlds to labeler/combination-captioned.json",
    )
    parser.add_argument("--caption-json", metavar="PATH", help="also write the caption-vote table as JSON here")


def _captioner_config(quality: str):
    from neurflow.world.captioner import CaptionerTrainConfig

    return CaptionerTrainConfig(**CAPTIONER_QUALITIES[quality])


def world_captions(name: str, quality: str, log) -> dict:
    """``labels``: group id -> the caption's short label (None when captioning failed), ``sure``: group id
    -> the captioner's probability of it, for every engine group of a suite world, by its own captioner
    of ``quality``; cached next to the world's network."""
    from neurflow.world.captioner import ensure_world_captioner
    from neurflow.world.suite import ensure_suite_world

    entry = ensure_suite_world(name, log=log)
    config = _captioner_config(quality)
    folder = ensure_world_captioner([entry.root], config, log=log)
    cache = entry.model.directory / f"captions-v2-{folder.name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    started = time.perf_counter()
    results = caption_engine_groups(entry, folder, config.image_size, log)
    metrics = json.loads((folder / "metrics.json").read_text())
    out = {
        "captioner": folder.name,
        "quality": quality,
        "renamed": metrics.get("renamed", {}),
        "fresh_mosaic_top1": metrics["fresh_mosaic_top1"],
        "labels": {gid: r.label if r is not None else None for gid, r in results.items()},
        "sure": {gid: r.confidence for gid, r in results.items() if r is not None},
        "ms_per_group": round(1000 * (time.perf_counter() - started) / max(len(results), 1), 1),
    }
    cache.write_text(json.dumps(out, indent=1))
    return out


def _text_embeddings(name: str, quality: str, arch: str, texts: list[str], log) -> dict[str, np.ndarray]:
    """Each text embedded by the text tower of a world's CLIP (``quality``, ``arch``) with its templates."""
    from neurflow.labeler.clip_model import load_clip
    from neurflow.labeler.vocabulary import load_templates
    from neurflow.world.clip import clip_spec
    from neurflow.world.suite import ensure_suite_world

    entry = ensure_suite_world(name, log=log, clip_qualities=[quality], towers=[arch])
    bundle = entry.clip_bundles(quality)[arch]
    clip = load_clip(clip_spec(bundle))
    templates = load_templates(str(bundle / "templates.txt"))
    return dict(zip(texts, clip.embed_concepts(texts, templates))) if texts else {}


def _votes(unit: dict, captions: dict, log) -> dict[str, object]:
    """Engine group id -> its caption vote under the unit's CLIPs (groups without a caption: none)."""
    from neurflow.labeler.evidence import caption_vote

    cases: list[Case] = unit["sets"]["engine"]
    if not cases:
        return {}
    name, quality = unit["world"].name, unit["quality"]
    texts = sorted({t for t in captions["labels"].values() if t})
    towers = [w for w, _ in cases[0].views]
    embedded = [_text_embeddings(name, quality, w.arch, texts, log) for w in towers]
    votes = {}
    for case in cases:
        text = captions["labels"].get(case.gid)
        if text:
            votes[case.gid] = caption_vote(
                "caption", text, [e[text] for e in embedded], _clip_views(case), captions["sure"].get(case.gid)
            )
    return votes


def _method(kind: str, votes: dict, captioned, shipped):
    """A labeling method over one unit's cases: (ranked scores, feature dict) as bench.labels expects.
    Groups without a caption are labeled as today (``shipped``), as ``label_circuit`` does."""

    def method(case: Case):
        from neurflow.labeler.evidence import combined_scores, rerank

        views = _clip_views(case)
        scores = combined_scores(views)
        order = np.argsort(-scores, kind="stable")
        vote = votes.get(case.gid) if kind != "labeler" else None
        if kind == "caption" and vote is not None:
            order = np.argsort(-vote.distribution, kind="stable")
            values = {}
        elif vote is None:
            order, values, _ = rerank(views, order, shipped, 1)
        else:
            order, values, _ = rerank(views, order, captioned, 1, caption=vote, caption_candidate=kind == "candidate")
        ranked = np.empty(len(order))
        ranked[order] = -np.arange(len(order), dtype=float)
        return ranked, values

    return method


def _candidate_rows(unit: dict, votes: dict, candidates: bool) -> tuple[list, list]:
    """Features and rightness of every concept the combination may choose for each captioned group of
    a unit: the mosaic score's first (and the caption's, with ``candidates``)."""
    from neurflow.labeler.evidence import FEATURES, combined_scores, features

    xs, ys = [], []
    for case in unit["sets"]["engine"]:
        vote = votes.get(case.gid)
        if vote is None or case.reference is None:
            continue
        views = _clip_views(case)
        first = int(np.argmax(combined_scores(views)))
        names = case.views[0][0].names
        for k in dict.fromkeys([first, vote.first] if candidates else [first]):
            values = features(views, k, caption=vote)
            xs.append([values[f] for f in FEATURES])
            ys.append(float(names[k] == case.reference))
    return xs, ys


def _fit(xs: list, ys: list, fitted_on: dict):
    from neurflow.labeler.evidence import FEATURES, Combination

    beta = fit_logistic(np.array(xs), np.array(ys), l2=CALIBRATION_L2, signs=tuple(CAPTION_SIGNS[f] for f in FEATURES))
    return Combination(tuple(float(b) for b in beta), FEATURES, fitted_on)


def _recalibrated(combination, dev: list, shipped):
    """``combination`` with its logit scaled and shifted (``sigmoid(a z + c)``, fitted on the dev labels it
    chooses): fitted on every candidate of a group, its probabilities are not those of the label it then
    picks; a positive scale keeps every choice and only moves the confidence (Platt scaling, folded into
    the coefficients)."""
    zs, ys = [], []
    for u, _, votes in dev:
        for r in _evaluate(u["sets"]["engine"], _method("candidate", votes, combination, shipped)):
            if "top1" in r and "caption" in r["confidence"]:
                p = min(max(combination.probability(r["confidence"]), 1e-9), 1 - 1e-9)
                zs.append([np.log(p / (1 - p))])
                ys.append(float(r["top1"]))
    shift, scale = fit_logistic(np.array(zs), np.array(ys), l2=CALIBRATION_L2, signs=(1,))
    if scale <= 0:
        raise SystemExit("the recalibration's scale is not positive: the combination's order does not hold on dev")
    return platt_folded(combination, float(scale), float(shift), len(ys))


def platt_folded(combination, scale: float, shift: float, labels: int):
    """``combination`` whose probability is ``sigmoid(scale * z + shift)`` of its logit ``z``: a logistic
    combination stays one, with every coefficient scaled and the intercept shifted."""
    from neurflow.labeler.evidence import Combination

    b = np.asarray(combination.coefficients)
    return Combination(
        (float(scale * b[0] + shift), *(float(x) for x in scale * b[1:])),
        combination.features,
        {
            **combination.fitted_on,
            "recalibrated": {"scale": round(scale, 4), "shift": round(shift, 4), "labels": labels},
        },
    )


def _scored(rows: list[dict], captioned, shipped) -> list[dict]:
    """Rows with their combination's probability as their confidence (the caption alone has none)."""
    return [
        {
            **r,
            "confidence": (
                None
                if not r["confidence"]
                else (captioned if "caption" in r["confidence"] else shipped).probability(r["confidence"])
            ),
        }
        for r in rows
    ]


def run_section(args) -> dict:
    import torch

    from neurflow.labeler.evidence import (
        CAPTION_CANDIDATE,
        CAPTIONED_COMBINATION_FILE,
        captioned_combination,
        default_combination,
    )

    torch.set_num_threads(1)
    names = getattr(args, "label_worlds", None) or list(CAPTION_WORLDS)
    qualities = list(dict.fromkeys(getattr(args, "clip_quality", None) or ["good"]))
    cap_qualities = list(dict.fromkeys(getattr(args, "captioner_quality", None) or list(CAPTIONER_QUALITIES)))
    started = time.time()
    log = lambda line: print(f"  [{time.time() - started:5.0f}s] {line}", file=sys.stderr, flush=True)  # noqa: E731
    units = _units(names, qualities, log, getattr(args, "noisy_towers", "both") == "own")
    captions = {(n, q): world_captions(n, q, log) for n in names for q in cap_qualities}
    print(
        "captioners (each trained on its world's train split only; top-1 of its short label on the world's engine "
        "groups with a reference):"
    )
    for (n, q), c in captions.items():
        w = next(u["world"] for u in units if u["world"].name == n)
        ref = [g for g in w.groups if g.reference is not None]
        top1 = _mean(c["labels"].get(g.gid) == g.reference for g in ref)
        print(
            f"  {n:<26} {q:<6} {c['captioner']}  top-1 {_fmt(top1)} on {len(ref)} groups, renamed {len(c['renamed'])} "
            f"parts, {c['ms_per_group']} ms per group"
        )
    cells = [(u, q, _votes(u, captions[(u["world"].name, q)], log)) for u in units for q in cap_qualities]
    dev = [c for c in cells if c[0]["world"].role == "dev" and c[1] in FIT_CAPTIONERS]
    shipped = default_combination()
    fitted_on = {
        "worlds": sorted({u["world"].name for u, _, _ in dev}),
        "clip_qualities": qualities,
        "captioner_qualities": [q for q in cap_qualities if q in FIT_CAPTIONERS],
        "groups": "engine groups with a caption",
        "l2": CALIBRATION_L2,
        "by": "python -m bench.run captions --write-captioned-combination",
    }
    fitted = {}
    for kind in METHODS if dev else ():
        xs, ys = [], []
        for u, _, votes in dev:
            x, y = _candidate_rows(u, votes, kind == "candidate")
            xs += x
            ys += y
        if len(set(ys)) < 2:
            raise SystemExit("no dev unit with both right and wrong captioned labels: nothing to fit")
        fitted[kind] = _fit(
            xs,
            ys,
            {**fitted_on, "rows": len(ys), "wrong": int(len(ys) - sum(ys)), "caption_candidate": kind == "candidate"},
        )
        print(f"\n{kind}: combination fitted on {len(ys)} dev rows: {fitted[kind].describe()}")
    if "candidate" in fitted:
        fitted["candidate"] = _recalibrated(fitted["candidate"], dev, shipped)
        print(f"  recalibrated on the labels it chose: {fitted['candidate'].describe()}")

    def evaluate(kind: str, captioned) -> list[dict]:
        out = []
        for u, q, votes in cells:
            rows = _evaluate(u["sets"]["engine"], _method(kind, votes, captioned, shipped))
            out.append(
                {
                    "unit": u,
                    "captioner": q,
                    "rows": rows if kind == "caption" else _scored(rows, captioned, shipped),
                    "baseline": _evaluate(u["sets"]["engine"], _baseline),
                }
            )
        return out

    chosen = "candidate" if CAPTION_CANDIDATE else "feature"
    if fitted:
        print(
            "\ndev: top-1 / ECE / ROC-AUC of each captioned method, fitted on this run's dev units (engine groups, "
            "every unit pooled)"
        )
        for kind in METHODS:
            rows = [r for cell in evaluate(kind, fitted[kind]) for r in cell["rows"]
                    if cell["unit"]["world"].role == "dev" and cell["captioner"] in FIT_CAPTIONERS]
            s = _summary(rows, rows)
            mark = " <- the labeler's (CAPTION_CANDIDATE)" if kind == chosen else ""
            print(
                f"  {kind:<10} top-1 {_fmt(s['top1'])}, ECE {_fmt(s['ece'])}, ROC-AUC {_fmt(s['confidence_auc'])}{mark}"
            )
        if getattr(args, "write_captioned_combination", False):
            CAPTIONED_COMBINATION_FILE.write_text(fitted[chosen].to_json())
            captioned_combination.cache_clear()
            print(f"  {chosen}'s combination written to {CAPTIONED_COMBINATION_FILE}")
    # every unit is reported as the labeler labels: the shipped captioned combination, the chosen method
    shipped_captioned = captioned_combination()
    print(f"\nthe labeler's captioned combination: {shipped_captioned.describe()}")
    results = {
        "labeler": evaluate("labeler", shipped),
        "caption": evaluate("caption", shipped),
        "captioned": evaluate(chosen, shipped_captioned),
    }

    summary: dict = {
        "captioners": {f"{n} {q}": {k: v for k, v in c.items() if k != "labels"} for (n, q), c in captions.items()},
        "fitted": {k: json.loads(c.to_json()) for k, c in fitted.items()},
        "shipped": json.loads(shipped_captioned.to_json()),
        "pooled": {},
    }
    print(
        "\npooled per role, CLIP quality and set, captioner (engine groups): method top-1 (baseline), "
        "confident top-1 at coverage, ROC-AUC, ECE"
    )
    for role in ("dev", "held-out"):
        for quality in qualities:
            sets = dict.fromkeys(u["clips"] for u, _, _ in cells if u["quality"] == quality)
            for set_name in sets:
                for q in cap_qualities:
                    pick = [
                        i
                        for i, (u, cq, _) in enumerate(cells)
                        if u["quality"] == quality
                        and u["clips"] == set_name
                        and cq == q
                        and (u["world"].role == "dev") == (role == "dev")
                    ]
                    if not pick:
                        continue
                    key = f"{role} {quality} {set_name} {q}"
                    summary["pooled"][key] = {}
                    line = []
                    for kind in results:
                        rows = [r for i in pick for r in results[kind][i]["rows"]]
                        base = [r for i in pick for r in results[kind][i]["baseline"]]
                        s = summary["pooled"][key][kind] = _summary(rows, base)
                        sure = (f" conf {_fmt(s['top1_confident'])}@{_fmt(s['coverage'])} "
                                f"AUC {_fmt(s['confidence_auc'])} ECE {_fmt(s['ece'])}")
                        line.append(f"{kind} {_fmt(s['top1'])}" + (sure if kind != "caption" else ""))
                    print(
                        f"  {key:<34} n {s['with_reference']:>3} base {_fmt(s['baseline_top1'])} | " + " | ".join(line)
                    )
    per_world = summary["per_world"] = {}
    print("\nper world (engine groups), the labeler with captions beside the baseline and today's labeler")
    for i, (u, q, _) in enumerate(cells):
        key = f"{u['world'].name} ({u['world'].role}) {u['quality']} {u['clips']} {q}"
        s = _summary(results["captioned"][i]["rows"], results["captioned"][i]["baseline"])
        today = _summary(results["labeler"][i]["rows"], results["labeler"][i]["baseline"])
        per_world[key] = {"captioned": s, "labeler": today}
        print(
            f"  {key:<50} n {s['with_reference']:>3} top-1 {_fmt(s['top1'])} (base {_fmt(s['baseline_top1'])}, today "
            f"{_fmt(today['top1'])}) conf {_fmt(s['top1_confident'])}@{_fmt(s['coverage'])} "
            f"AUC {_fmt(s['confidence_auc'])} ECE {_fmt(s['ece'])}"
        )
    if getattr(args, "caption_json", None):
        Path(args.caption_json).write_text(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_section(parser.parse_args())
