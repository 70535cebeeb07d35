"""Label quality on the synthetic world, end to end: ``python -m neurflow.world.benchmark``.

Two conditions, each labeled with the world CLIP under every method of ``METHODS``:

* **engine circuits**: the engine on the world's reference resnet18 (held-out images, the demo's
  layers and settings) for several classes; a group's reference label is the part that dominates
  most of its patches (part masks; mixed groups have none). Circuits are cached in ``--out``.
* **loose crops** (stress test, no engine): hand-built circuits of all eight classes whose patches are
  cut around each part at ``--crop-scale`` times the usual size, so that background and neighbouring
  parts fill most of every patch; the reference is the part the group was built around.

Prints, per condition and method: group top-1 / top-5 accuracy, held-out retrieval AUC and the
calibration ROC-AUC of the confidence. These are the numbers in ``docs/labeling.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from neurflow.core.circuit import Circuit
from neurflow.core.circuit_arrays import read_circuit
from neurflow.world.suite import ENGINE, LAYERS

METHODS = {
    # the plain baseline: highest mean cosine similarity of the (display) exemplars
    "baseline: mean cos, exemplars": {"score": "mean_cosine", "patches": "exemplars"},
    "mean cos, all patches": {"score": "mean_cosine"},
    "contrastive (ours)": {"score": "contrastive"},
}


def engine_circuit(model, cls: int, out: Path, max_images: int, tau: int) -> Circuit:
    from neurflow.core.jobspec import parse_jobspec
    from neurflow.core.pipeline import fit_spec

    path = out / f"class-{cls}-tau{tau}-n{max_images}.json"
    if path.is_file():
        return read_circuit(path)
    spec = {
        "model": model.model_spec(),
        "data": {"images": str(model.images("heldout")), "target_class": cls, "select": "predicted", "max_images": max_images},
        "engine": {**ENGINE, "tau": tau},
    }
    circuit = fit_spec(parse_jobspec(json.dumps(spec)), Path("."))[cls]
    path.write_text(circuit.to_json())
    return circuit


def _run(circuits, images, bundle, world_root, use_world_refs: bool) -> dict[str, dict]:
    from neurflow.labeler.evaluation import References, evaluate_circuit
    from neurflow.world.references import from_world
    from neurflow.labeler.labeling import label_circuit
    from neurflow.world.clip import labeling_section

    results = {}
    for name, overrides in METHODS.items():
        groups = top1 = top5 = 0
        reports, per_class = [], {}
        for cls, (circuit, expected) in circuits.items():
            labeled = label_circuit(circuit, images, labeling_section(bundle, **overrides))
            if use_world_refs:
                refs = from_world(labeled, world_root, images_root=images)
            else:
                refs = References("built around", {gid: [p] if p else [] for gid, p in expected.items()})
            report = evaluate_circuit(labeled, images, refs)
            agg = report["aggregate"]
            n = agg["n_with_reference"]
            groups += n
            top1 += round((agg["top1_accuracy"] or 0) * n)
            top5 += round((agg["top5_accuracy"] or 0) * n)
            per_class[cls] = agg["top1_accuracy"]
            reports.append(report)

        def mean(key):
            values = [r["aggregate"].get(key) for r in reports if r["aggregate"].get(key) is not None]
            return sum(values) / len(values) if values else None

        results[name] = {"groups": groups, "top1": top1 / groups if groups else None, "top5": top5 / groups if groups else None,
                         "retrieval_auc": mean("retrieval_auc"), "calibration_auc": mean("calibration_auc"),
                         "mean_confidence": mean("mean_confidence"), "per_class_top1": per_class}
    return results


def _print(title: str, results: dict[str, dict]) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"\n{title}")
    print(f"  {'method':<30} {'groups':>6} {'top-1':>6} {'top-5':>6} {'ret.AUC':>7} {'calib.AUC':>9}  per-class top-1")
    for name, r in results.items():
        per = " ".join(f"{c}:{fmt(v)}" for c, v in r["per_class_top1"].items())
        print(f"  {name:<30} {r['groups']:>6} {fmt(r['top1']):>6} {fmt(r['top5']):>6} {fmt(r['retrieval_auc']):>7} "
              f"{fmt(r['calibration_auc']):>9}  {per}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 3, 5, 6], help="classes of the engine condition")
    parser.add_argument("--out", default=".cache/labeler-benchmark", help="where engine circuits are cached")
    parser.add_argument("--max-images", type=int, default=40)
    parser.add_argument("--tau", type=int, default=8)
    parser.add_argument("--crop-scale", type=float, nargs="*", default=[2.0, 2.6], help="loose-crop conditions (none: skip)")
    parser.add_argument("--no-engine", action="store_true", help="skip the engine condition")
    parser.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    from neurflow.world import ensure_world_model
    from neurflow.world.circuits import world_circuit
    from neurflow.world.clip import ensure_world_clip

    torch.set_num_threads(1)  # see tests/labeler/conftest.py: faster on shared, busy cores
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = ensure_world_model(progress=False)
    bundle = ensure_world_clip(model.world_root, log=lambda line: print(line, file=sys.stderr))
    images = model.images("heldout")
    summary: dict[str, dict] = {}
    if not args.no_engine:
        circuits = {}
        for cls in args.classes:
            started = time.time()
            circuits[cls] = (engine_circuit(model, cls, out, args.max_images, args.tau), {})
            print(f"class {cls}: engine circuit ready ({time.time() - started:.0f}s)", file=sys.stderr)
        summary["engine"] = _run(circuits, images, bundle, model.world_root, use_world_refs=True)
        _print(f"engine circuits: classes {args.classes}, heldout images, layers {LAYERS[1:]}, tau {args.tau}; references: part masks",
               summary["engine"])
    for scale in args.crop_scale or []:
        circuits = {c: world_circuit(model.world_root, c, n_images=12, split="heldout", crop_scale=scale) for c in range(8)}
        key = f"loose crops x{scale:g}"
        summary[key] = _run(circuits, images, bundle, model.world_root, use_world_refs=False)
        _print(f"{key}: hand-built circuits of all 8 classes, patches {scale:g}x looser; references: the part each group was built around",
               summary[key])
    print(f"\nworld CLIP bundle: {bundle}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
