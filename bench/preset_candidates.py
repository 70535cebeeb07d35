"""Candidate fast presets on the demo model, scored against a saved exact run (no baseline, no timing
targets): how a preset is chosen before the real-size section checks it on a model it was not
chosen on.

    python -m bench.preset_candidates '[{}, {"ig_steps": 2}, {"ig_patches": 20}]' \
        --exact bench/results/session15.json --out bench/results/fast-preset-candidates-demo.json

Each candidate is a dict of engine parameters laid over ``preset="fast"``; every fit runs in this one
process, one after another, on the configuration of the saved run (its layers, images, class and
settings), and prints its fit seconds, stage timings and per-layer Jaccard against the saved exact
sets. The engine is deterministic, so a saved exact run stands for a fresh one of the same code.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", help="JSON list of parameter dicts laid over the fast preset")
    parser.add_argument("--exact", required=True, help="a saved engine-bench results JSON with an 'exact' run")
    parser.add_argument("--out", required=True, help="where to write the candidates' results (JSON)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from bench.demo import load_demo
    from bench.engine_speed import compare
    from bench.reference_baseline import engine_core_sets
    from neurflow.core.engine import NeurFlow
    from neurflow.core.memory import malloc_for_fit
    from neurflow.core.params import FAST_PRESET

    saved = json.loads(Path(args.exact).read_text())
    config, exact = saved["config"], saved["runs"]["exact"]
    settings = {k: v for k, v in config["settings"].items() if k not in ("ig_steps", "batch_size")}
    demo = load_demo(config["images"], config["target_class"], config["model"])
    malloc_for_fit("fast")
    results = []
    for overrides in json.loads(args.candidates):
        started = time.perf_counter()
        engine = NeurFlow(config["layers"], select="all", preset="fast", **settings, **overrides)
        circuit = engine.fit(demo.model, demo.pixels, demo.target_class).circuit_
        wall = time.perf_counter() - started
        core, bottom = engine_core_sets(circuit)
        row = {"candidate": overrides, "fit_s": round(wall, 1), "timings": circuit.timings,
               "vs_exact": compare(exact, {"core": core, "bottom_chosen": bottom}, config["layers"])}
        print(f"{json.dumps(overrides)}: fit {wall:.1f} s, mean Jaccard vs exact "
              f"{row['vs_exact']['mean_jaccard']:.3f}, per layer "
              + ", ".join(f"{k} {v:.3f}" for k, v in row["vs_exact"]["per_layer"].items()), flush=True)
        results.append(row)
    Path(args.out).write_text(json.dumps({"exact_run": args.exact, "fast_preset": FAST_PRESET,
                                          "results": results}, indent=1))


if __name__ == "__main__":
    main()
