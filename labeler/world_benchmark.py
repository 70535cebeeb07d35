"""Label quality on the synthetic world, end to end: ``python -m labeler.world_benchmark``.

Runs the engine on the world's reference resnet18 (held-out images, the demo's layers and settings)
for several classes, labels every circuit with the world CLIP under each scoring method, and scores
the labels against the world's part masks (a group's reference is the part that dominates most of its
patches; mixed groups have none). Circuits are cached in ``--out`` so that reruns only relabel.

Prints, per method: group top-1 / top-5 accuracy against ground truth, held-out retrieval AUC and the
calibration ROC-AUC of the confidence. These are the numbers in ``labeler/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.circuit import Circuit

LAYERS = ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0"]
METHODS = {
    "mean-cosine baseline": {"score": "mean_cosine"},
    "contrastive (ours)": {"score": "contrastive"},
}


def engine_circuit(model, cls: int, out: Path, max_images: int, tau: int) -> Circuit:
    from core.jobspec import parse_jobspec
    from core.pipeline import fit_spec

    path = out / f"class-{cls}-tau{tau}-n{max_images}.json"
    if path.is_file():
        return Circuit.from_json(path.read_bytes())
    spec = {
        "model": model.model_spec(),
        "data": {"images": str(model.images("heldout")), "target_class": cls, "select": "predicted", "max_images": max_images},
        "engine": {"layers": LAYERS, "tau": tau, "top_n": 50, "preset": "fast", "seed": 0},
    }
    circuit = fit_spec(parse_jobspec(json.dumps(spec)), Path("."))[cls]
    path.write_text(circuit.to_json())
    return circuit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 3, 5, 6])
    parser.add_argument("--out", default=".cache/labeler-benchmark")
    parser.add_argument("--max-images", type=int, default=40)
    parser.add_argument("--tau", type=int, default=8)
    parser.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    from core.world import ensure_world_model
    from labeler.evaluation import evaluate_circuit, from_world
    from labeler.labeling import label_circuit
    from labeler.world_clip import ensure_world_clip, labeling_section

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = ensure_world_model(progress=False)
    bundle = ensure_world_clip(model.world_root, log=lambda line: print(line, file=sys.stderr))
    images = model.images("heldout")
    results: dict[str, dict] = {name: {"groups": 0, "top1": 0, "top5": 0, "per_class": {}, "reports": []} for name in METHODS}
    for cls in args.classes:
        started = time.time()
        circuit = engine_circuit(model, cls, out, args.max_images, args.tau)
        print(f"class {cls}: circuit with {sum(1 for _ in circuit.iter_groups())} groups ({time.time() - started:.0f}s)", file=sys.stderr)
        for name, overrides in METHODS.items():
            labeled = label_circuit(circuit, images, labeling_section(bundle, **overrides))
            refs = from_world(labeled, model.world_root, images_root=images)
            report = evaluate_circuit(labeled, images, refs)
            agg = report["aggregate"]
            n = agg["n_with_reference"]
            r = results[name]
            r["groups"] += n
            r["top1"] += round((agg["top1_accuracy"] or 0) * n)
            r["top5"] += round((agg["top5_accuracy"] or 0) * n)
            r["per_class"][cls] = {"groups": n, "top1": agg["top1_accuracy"]}
            r["reports"].append(report)
    print(f"\nworld CLIP: {bundle.name}; classes {args.classes}; images: heldout split; layers {LAYERS[1:]}")
    print(f"{'method':<22} {'groups':>6} {'top-1':>6} {'top-5':>6} {'ret.AUC':>7} {'calib.AUC':>9}  per class top-1")
    summary = {}
    for name, r in results.items():
        def mean(key):
            values = [rep["aggregate"].get(key) for rep in r["reports"] if rep["aggregate"].get(key) is not None]
            return sum(values) / len(values) if values else None

        top1 = r["top1"] / r["groups"] if r["groups"] else None
        top5 = r["top5"] / r["groups"] if r["groups"] else None
        ret, cal = mean("retrieval_auc"), mean("calibration_auc")
        per = " ".join(f"{c}:{v['top1']:.2f}" if v["top1"] is not None else f"{c}:-" for c, v in r["per_class"].items())
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{name:<22} {r['groups']:>6} {fmt(top1):>6} {fmt(top5):>6} {fmt(ret):>7} {fmt(cal):>9}  {per}")
        summary[name] = {"groups": r["groups"], "top1": top1, "top5": top5, "retrieval_auc": ret, "calibration_auc": cal,
                         "per_class": r["per_class"]}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
