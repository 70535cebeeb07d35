"""``neurflow experiments SPEC.json --out DIR``: the paper's faithfulness experiments on a model.

Writes ``DIR/experiments.json`` (:class:`neurflow.core.experiments.results.ExperimentResults`) and a
PNG per experiment, and prints a digest of the numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurflow.progress import ProgressBars


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiments", help="rerun the paper's faithfulness experiments (fidelity curves, "
                                           "edge-weight fidelity, optimality) on a job spec; JSON + PNG plots")
    p.add_argument("spec", help="a job spec (as for 'neurflow run') with an optional 'experiments' section")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-plots", action="store_true", help="write the JSON only")
    p.set_defaults(func=cmd_experiments)


def cmd_experiments(args: argparse.Namespace) -> int:
    from neurflow.core.experiments.runner import run_experiments
    from neurflow.core.experiments.spec import load_experiment_spec
    from neurflow.core.experiments.summary import summary_lines

    spec, base_dir = load_experiment_spec(args.spec)
    out = Path(args.out)
    with ProgressBars() as bars:
        results = run_experiments(spec, base_dir, progress=bars)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "experiments.json"
    path.write_text(results.to_json())
    print("\n".join(summary_lines(results)))
    print(f"numbers: {path}")
    if not args.no_plots:
        from neurflow.viewer.experiment_plots import write_plots

        for png in write_plots(results, out):
            print(f"plot: {png}")
    return 0
