"""Bench section ``realsize``: the engine at a real model's size, ResNet-50 at 224 px.

The same three runs as the ``engine`` section (reference-structured baseline, engine exact, engine
fast, each in its own child process), on an untrained torchvision ResNet-50 (seeded) with 50 smooth
random 224 px images (2950 patches), tau 16, top_n 50, and the paper's layers one bottleneck apart
(``bench.demo.REAL_LAYERS``: ``fc``, ``layer4.2`` ... ``layer3.5``, with ``layer3.4`` the IG input).

By default only the first two fitted layers are run (``fc`` and ``layer4.2``: 1 and 16 core neurons,
850 (neuron, patch) pairs of IG), which the baseline finishes in well under an hour on two cores;
the readout pass over all 2950 patches is the same as in the full configuration. ``--real-layers 5``
runs all five fitted layers: tens of thousands of pairs (docs/speed.md). ``--fast-alt JSON`` adds a
candidate fast preset (run ``fast_alt``), as in the engine section; results go to
``bench/results/realsize-<layers>layers-<images>images-<runs>.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

from bench import engine_speed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real-layers", type=int, default=2,
                        help="realsize: fitted layers of bench.demo.REAL_LAYERS to run (default 2, at most 5)")
    parser.add_argument("--real-images", type=int, default=50, help="realsize: images (default 50)")
    parser.add_argument("--real-runs", default="baseline,exact,fast",
                        help="realsize: comma-separated subset of baseline,exact,fast")


def run_section(args: argparse.Namespace) -> dict[str, Any]:
    if not 1 <= args.real_layers <= 5:
        raise SystemExit(f"--real-layers must be 1..5 (fitted layers of the real-size list), got {args.real_layers}")
    sub = copy.copy(args)
    sub.model, sub.quick, sub.fitted_layers = "resnet50", False, args.real_layers
    sub.images, sub.runs = args.real_images, args.real_runs
    sub.target_class = 0
    runs = args.real_runs.replace(",", "-") + ("-alt" if args.fast_alt else "")
    sub.out = str(engine_speed.RESULTS / f"realsize-{args.real_layers}layers-{args.real_images}images-{runs}.json")
    return engine_speed.run_section(sub)
