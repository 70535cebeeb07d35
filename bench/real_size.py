"""Bench section ``realsize``: the engine at a real model's size, ResNet-50 at 224 px.

The same three runs as the ``engine`` section (reference-structured baseline, engine exact, engine
fast, each in its own child process), on an untrained torchvision ResNet-50 (seeded) with 50 smooth
random 224 px images (2950 patches), tau 16, top_n 50, and the paper's layers one bottleneck apart
(``bench.demo.REAL_LAYERS``: ``fc``, ``layer4.2`` ... ``layer3.5``, with ``layer3.4`` the IG input).

By default the three runs fit the first two layers only (``fc`` and ``layer4.2``: 1 and 16 core
neurons, 850 (neuron, patch) pairs of IG), the subset the baseline finishes in well under an hour on
two cores; the readout pass over all 2950 patches is the same as in the full configuration. Then the
fast preset alone fits all five layers (about 10 minutes here) and is held to the 10-minute target
(``--no-real-five`` skips it). ``--real-layers 5`` runs every requested run on all five fitted
layers: tens of thousands of pairs, hours for exact (docs/speed.md). ``--fast-alt JSON`` adds a
candidate fast preset (run ``fast_alt``), as in the engine section; results go to
``bench/results/realsize-<layers>layers-<images>images-<runs>.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

from bench import engine_speed
from bench.demo import REAL_LAYERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real-layers", type=int, default=2,
                        help="realsize: fitted layers of bench.demo.REAL_LAYERS to run (default 2, at most 5)")
    parser.add_argument("--real-images", type=int, default=50, help="realsize: images (default 50)")
    parser.add_argument("--real-runs", default="baseline,exact,fast",
                        help="realsize: comma-separated subset of baseline,exact,fast")
    parser.add_argument("--no-real-five", dest="real_five", action="store_false",
                        help="realsize: skip the fast preset's own run on all five fitted layers")


def run_section(args: argparse.Namespace) -> dict[str, Any]:
    if not 1 <= args.real_layers <= 5:
        raise SystemExit(f"--real-layers must be 1..5 (fitted layers of the real-size list), got {args.real_layers}")
    sub = copy.copy(args)
    sub.model, sub.quick, sub.fitted_layers = "resnet50", False, args.real_layers
    sub.images, sub.runs = args.real_images, args.real_runs
    sub.target_class = 0
    runs = args.real_runs.replace(",", "-") + ("-alt" if args.fast_alt else "")
    sub.out = str(engine_speed.RESULTS / f"realsize-{args.real_layers}layers-{args.real_images}images-{runs}.json")
    results = engine_speed.run_section(sub)
    five = results
    if getattr(args, "real_five", True) and args.real_layers < 5 and "fast" in sub.runs.split(","):
        print(f"\n-- the fast preset alone on all five fitted layers ({args.real_images} images)", flush=True)
        sub5 = copy.copy(sub)
        sub5.fitted_layers, sub5.runs, sub5.fast_alt = 5, "fast", None
        sub5.out = str(engine_speed.RESULTS / f"realsize-5layers-{args.real_images}images-fast.json")
        five = engine_speed.run_section(sub5)
        results["five_layers_fast"] = five["runs"]["fast"]
        exact = results["runs"].get("exact")
        if exact is not None:  # the five-layer sets, on the layers the exact run fitted
            layers = results["config"]["layers"]
            fast = five["runs"]["fast"]
            shared = {"core": fast["core"], "bottom_chosen": fast["core"][layers[-1]]}
            results["five_layers_fast_vs_exact"] = cmp = engine_speed.compare(exact, shared, layers)
            print(f"fast preset, five fitted layers, against exact on its {len(layers) - 1} fitted layers: "
                  f"mean Jaccard {cmp['mean_jaccard']:.3f}, kept {layers[-1]} channels {cmp['bottom_edges']:.3f}")
    if "fast" in five["runs"] and len(five["config"]["layers"]) == len(REAL_LAYERS):
        print(target_verdict(five["runs"]["fast"]))
    return results


#: One class at real size with the fast preset, fit and whole process alike (issue 10).
TARGET_S = 600.0


def target_verdict(run: dict[str, Any]) -> str:
    ok = run["wall_s"] <= TARGET_S and run["child_wall_s"] <= TARGET_S
    return (f"fast preset, five fitted layers: fit {run['wall_s']:.1f} s, whole process {run['child_wall_s']:.1f} s "
            f"(target <= {TARGET_S:.0f} s per class) -> {'PASS' if ok else 'FAIL'}")
