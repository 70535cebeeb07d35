"""``python -m bench.run corrections``: how much a few human corrections help every other label.

Per world of :data:`neurflow.world.suite.SUITE` (its network and engine circuits of two classes), the
groups are labeled through the product path (:func:`neurflow.labeler.labeling.label_circuit`, default
settings) with a noisy CLIP of the label suite (``--correction-clip``, default ``q80``: the world's
own tower taught some parts under another part's name, :func:`neurflow.world.suite.noisy_clip_config`),
or with ``--correction-clip weak`` the CLIP the prototype weight was chosen with: the same tower
trained for :data:`WEAK_CLIP_STEPS` steps instead of 200 (its single-part zero-shot top-1 is printed
either way). A simulated annotator then corrects the
5 % and 10 % least-confident groups with the world's truth (the part that at least 3 of the group's 5
display exemplars show, as in :mod:`bench.labels`; groups without one are never picked: an annotator
could not name them either), and :func:`neurflow.labeler.prototypes.relabel_with_corrections`
re-scores every group of both circuits with the corrected concepts' prototypes.

Reported per world and share: top-1 on the groups *not* corrected, before and after, at every
prototype weight of :data:`WEIGHTS`. The weight (``PROTOTYPE_WEIGHT``) is chosen on the dev worlds and
only reported on the held-out ones.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

#: Training steps of the weaker world CLIP per image tower (the suite's own CLIP trains 200).
WEAK_CLIP_STEPS = {"vit": 120, "resnet": 50}
SHARES = (0.05, 0.10)
WEIGHTS = (0.25, 0.5, 0.75)
MIN_MAJORITY = 3  # of 5 display exemplars, as in bench.labels
DEFAULT_WORLDS = ("standard", "cluttered", "shapes3", "shapes3-uneven-cluttered", "shapes3-seed1")


def add_arguments(parser) -> None:
    parser.add_argument("--correction-worlds", nargs="+", metavar="WORLD",
                        help=f"suite worlds for the correction curve (default: {' '.join(DEFAULT_WORLDS)})")
    parser.add_argument("--correction-json", metavar="PATH", help="also write the correction curve as JSON here")
    parser.add_argument("--correction-clip", default="q80", choices=["weak", "q90", "q80", "q65"],
                        help="the CLIP the groups are labeled with: a noisy CLIP of the suite (the world's own tower) "
                             "or 'weak', a shorter training of the world's CLIP (default q80)")


def labeling_clip(name: str, quality: str, log):
    """The suite world and the bundle of the CLIP its groups are labeled with (see the module docstring)."""
    from neurflow.world.clip import TrainConfig, ensure_world_clip
    from neurflow.world.suite import ensure_suite_world

    if quality == "weak":
        entry = ensure_suite_world(name, log=log)
        arch = entry.world.clip_arch
        train = TrainConfig(steps=WEAK_CLIP_STEPS[arch], batch_size=48, arch=arch)
        return entry, ensure_world_clip(entry.root, train, log=log), f"{arch}, {train.steps} steps"
    entry = ensure_suite_world(name, log=log, clip_qualities=[quality], towers=["own"])
    return entry, entry.clip_bundles(quality)[entry.world.clip_arch], f"{entry.world.clip_arch}, {quality}"


def truths(entry, circuit) -> dict[str, str | None]:
    """Group id -> the part its mosaic shows (at least MIN_MAJORITY of its exemplars), else None."""
    from neurflow.world.ground_truth import World, purity

    world = World.load(entry.root)
    order = [world.part_names[k] for k in sorted(world.part_names)]
    paths = {ref.id: world.relative_path(ref.path, entry.images) for ref in circuit.images}
    out = {}
    for _, _, group in circuit.iter_groups():
        shown = purity([world.dominant_part(paths[e.image], e.box) for e in group.exemplars], order)
        ok = shown.majority_part and shown.purity * shown.n >= MIN_MAJORITY
        out[group.id] = shown.majority_part if ok else None
    return out


def top1(circuits, truth: dict[tuple[int, str], str], skip: set) -> float | None:
    hits = [c.group(gid)[1].labels[0].text == part for (k, gid), part in truth.items() if (k, gid) not in skip
            for c in [circuits[k]]]
    return sum(hits) / len(hits) if hits else None


def least_confident(circuits, truth: dict[tuple[int, str], str], share: float) -> list[tuple[int, str]]:
    """The ``share`` of the groups with a truth whose confidence is lowest (at least one)."""
    ranked = sorted(truth, key=lambda key: (circuits[key[0]].group(key[1])[1].confidence or 0.0, key))
    return ranked[: max(1, math.ceil(share * len(ranked)))]


def world_curve(name: str, log, quality: str = "q80") -> dict:
    from neurflow.core.circuit import Circuit
    from neurflow.core.corrections import correct_group
    from neurflow.labeler.clip_model import load_clip
    from neurflow.labeler.config import LabelerConfig
    from neurflow.labeler.labeling import label_circuit
    from neurflow.labeler.prototypes import relabel_with_corrections
    from neurflow.world.clip import labeling_section
    from neurflow.world.suite import SUITE

    entry, bundle, which = labeling_clip(name, quality, log)
    zero_shot = json.loads((bundle / "metrics.json").read_text())["zero_shot_top1"]
    log(f"{name}: labeling CLIP ({which}) zero-shot top-1 {zero_shot:.3f}")
    config = LabelerConfig.from_spec(labeling_section(bundle))
    clip = load_clip(config.clip)
    labeled = [label_circuit(c, entry.images, config, clip=clip) for c in entry.circuits.values()]
    truth = {(k, gid): part for k, c in enumerate(labeled) for gid, part in truths(entry, c).items() if part}
    row = {"world": name, "role": SUITE[name].role, "clip": entry.world.clip_arch, "clip_quality": quality,
           "clip_zero_shot": zero_shot, "groups": sum(1 for c in labeled for _ in c.iter_groups()),
           "with_truth": len(truth), "top1_all": top1(labeled, truth, set()), "shares": []}
    for share in SHARES:
        picked = least_confident(labeled, truth, share)
        corrected = [Circuit.from_json(c.to_json()) for c in labeled]  # copies the annotator writes into
        for k, gid in picked:
            correct_group(corrected[k], gid, truth[(k, gid)], key="bench-annotator", via="python")
        point = {"share": share, "corrected": len(picked), "before": top1(labeled, truth, set(picked)),
                 "picked_right_before": sum(labeled[k].group(g)[1].labels[0].text == truth[(k, g)] for k, g in picked),
                 "after": {}}
        for weight in WEIGHTS:
            started = time.time()
            again = relabel_with_corrections([(c, entry.images) for c in corrected], config, clip=clip, weight=weight)
            point["after"][str(weight)] = top1(again, truth, set(picked))
            log(f"{name}: {share:.0%} corrected ({len(picked)}), w={weight}: top-1 on the rest "
                f"{point['before']:.3f} -> {point['after'][str(weight)]:.3f} ({time.time() - started:.0f} s)")
        row["shares"].append(point)
    return row


def table(rows: list[dict]) -> str:
    head = f"  {'world':<26} {'role':<9} {'clip':<11} {'0-shot':>6} {'groups':>6} {'share':>5} {'fixed':>5} {'before':>6} " + \
        " ".join(f"{'w=' + str(w):>7}" for w in WEIGHTS)
    out = ["top-1 on the groups not corrected, before and after relabeling with the corrections as prototypes", head]
    for r in rows:
        for p in r["shares"]:
            after = " ".join(f"{p['after'][str(w)]:>7.3f}" for w in WEIGHTS)
            clip = f"{r['clip']} {r['clip_quality']}"
            out.append(f"  {r['world']:<26} {r['role']:<9} {clip:<11} {r['clip_zero_shot']:>6.3f} {r['with_truth']:>6} "
                       f"{p['share']:>5.0%} {p['corrected']:>5} {p['before']:>6.3f} {after}")
    return "\n".join(out)


def run_section(args) -> dict:
    import torch

    torch.set_num_threads(1)
    started = time.time()

    def log(line: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {line}", flush=True)

    quality = getattr(args, "correction_clip", "q80")
    rows = [world_curve(name, log, quality) for name in (args.correction_worlds or DEFAULT_WORLDS)]
    print(table(rows), flush=True)
    result = {"corrections": rows}
    if args.correction_json:
        Path(args.correction_json).write_text(json.dumps(result, indent=1))
    return result
