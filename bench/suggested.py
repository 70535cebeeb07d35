"""Bench section ``suggested``: one class at real size on the layers a user gets by default.

ResNet-50 at 224 px (torchvision, seeded random weights, ``bench.demo``'s 50 smooth random images:
2950 patches), tau 16, top_n 50, the fast preset, ``select="all"``, and the layers of
``"layers": "auto"``: :func:`neurflow.core.layer_budget.suggest` at the default budget, calibrated in
the timed process itself. One child process does everything a user's run does (imports, model,
images, the calibration, the fit); the parent times the whole process (wall, and CPU seconds from
``os.wait4``) and holds it to the issue's target: **<= 10 minutes per class on a quiet 2-core CPU**.

The result records the suggestion (each candidate's estimate) next to what the fit measured (the
readout pass and each IG stage, the steps and residuals the adaptive preset reached per layer), so
the estimate can be checked against the fit. Results: ``bench/results/suggested-<images>images.json``
(and ``.md``). The load average is recorded before and after: on a shared machine the wall time is
not the quiet figure, the CPU seconds are the steadier number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engine_speed import RESULTS, _cpu_name, _git_commit, n_cores

#: One class at real size with the fast preset on the default layers, whole process (issue 19).
TARGET_S = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suggested-images", type=int, default=50, help="suggested: images (default 50)")
    parser.add_argument("--suggested-budget", default=None,
                        help="suggested: the budget of the suggestion (default: the one layers: \"auto\" uses)")
    parser.add_argument("--suggested-out", default=None,
                        help="suggested: results JSON (default bench/results/suggested-<images>images.json)")


def worker(config: dict[str, Any], result_path: str) -> None:
    import msgspec
    import torch

    torch.set_num_threads(config["threads"])
    from bench.demo import load_demo
    from neurflow.core.engine import NeurFlow
    from neurflow.core.layer_budget import CALIBRATION_IMAGES, parse_budget, suggest
    from neurflow.core.memory import malloc_for_fit
    from neurflow.core.params import DEFAULT_LAYER_BUDGET_S, EngineParams
    from neurflow.progress import ProgressEvent

    malloc_for_fit("fast")
    demo = load_demo(config["images"], 0, "resnet50")
    settings = {"tau": 16, "top_n": 50, "preset": "fast"}
    budget = parse_budget(config["budget"]) if config["budget"] else DEFAULT_LAYER_BUDGET_S
    cpu0, t0 = time.process_time(), time.perf_counter()
    # calibrated on the fit's own first images, as a job's "auto" is (core/engine.py)
    found = suggest(demo.model, 224, EngineParams(layers="auto", **settings), len(demo.pixels), budget,
                    sample=demo.pixels[:CALIBRATION_IMAGES])
    suggest_s = time.perf_counter() - t0
    print(f"  suggestion ({suggest_s:.1f} s): {found.layers}", file=sys.stderr, flush=True)
    for row in found.estimates:
        print(f"    {row.name}: {row.channels} channels, ~{row.neurons} neurons, {row.steps} IG steps above, "
              f"~{row.seconds:.0f} s", file=sys.stderr)
    last = [0.0]

    def progress(event: ProgressEvent) -> None:
        now = time.perf_counter()
        if now - last[0] > 60 or event.done >= event.total:
            last[0] = now
            print(f"  {event.stage}: {event.done}/{event.total} {event.unit} ({now - t0:.0f} s)", file=sys.stderr,
                  flush=True)

    fit_started = time.perf_counter()
    circuit = NeurFlow(found.layers, select="all", progress=progress, **settings).fit(
        demo.model, demo.pixels, 0).circuit_
    fit_s = time.perf_counter() - fit_started
    out = {
        "suggestion": {"layers": found.layers, "candidates": found.candidates, "budget_s": found.budget_s,
                       "estimates": [msgspec.to_builtins(r) for r in found.estimates], "seconds": suggest_s},
        "fit_s": fit_s, "suggest_and_fit_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
        "timings": {k: round(float(v), 1) for k, v in circuit.timings.items()},
        "layers": [{"name": lay.name, "neurons": len(lay.neurons),
                    "ig": msgspec.to_builtins(lay.ig)} for lay in circuit.layers],
        "n_patches": circuit.fit.n_patches, "demo": demo.info, "torch_threads": torch.get_num_threads(),
    }
    Path(result_path).write_text(json.dumps(out))


def run_section(args: argparse.Namespace) -> dict[str, Any]:
    import platform

    config = {"images": args.suggested_images, "budget": args.suggested_budget,
              "threads": getattr(args, "threads", None) or n_cores()}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_path = fh.name
    load_before = os.getloadavg()
    print(f"suggested layers, ResNet-50 224 px, {config['images']} images, tau 16, fast; load {load_before}", flush=True)
    started = time.perf_counter()
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "bench.suggested", "--worker", "--config", json.dumps(config),
                             "--result", result_path], cwd=Path(__file__).resolve().parents[1])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the suggested-layers run failed with exit code {os.waitstatus_to_exitcode(status)}")
    run = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    run["process_wall_s"] = time.perf_counter() - started
    run["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    run["peak_rss_mb"] = usage.ru_maxrss / 1024.0
    results = {"section": "suggested", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": _git_commit(),
               "machine": {"platform": platform.platform(), "processor": _cpu_name(), "cores": n_cores(),
                           "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
               "config": config, "run": run, "verdict": verdict(run)}
    print(report(results))
    out = Path(args.suggested_out) if getattr(args, "suggested_out", None) else (
        RESULTS / f"suggested-{config['images']}images.json")
    out.write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(report(results) + "\n")
    print(f"results: {out}")
    return results


def verdict(run: dict[str, Any]) -> str:
    ok = run["process_wall_s"] <= TARGET_S
    return (f"fast preset on the suggested layers {', '.join(run['suggestion']['layers'])}: whole process "
            f"{run['process_wall_s']:.0f} s wall, {run['process_cpu_s']:.0f} s CPU (target <= {TARGET_S:.0f} s wall "
            f"per class on a quiet 2-core CPU) -> {'PASS' if ok else 'FAIL'}")


def report(results: dict[str, Any]) -> str:
    run, m = results["run"], results["machine"]
    lines = [f"Suggested layers at real size ({results['started']}, commit {results['commit']}): {run['demo']['model']}, "
             f"{run['demo']['images']} ({run['n_patches']} patches), tau 16, top_n 50, fast preset, "
             f"{m['processor']}, {run['torch_threads']} threads, load average {m['loadavg_before'][0]:.1f} before, "
             f"{m['loadavg_after'][0]:.1f} after (1-minute).", "",
             f"- whole process: {run['process_wall_s']:.1f} s wall, {run['process_cpu_s']:.1f} s CPU, peak RSS "
             f"{run['peak_rss_mb']:.0f} MB; the suggestion (calibration) {run['suggestion']['seconds']:.1f} s, the fit "
             f"{run['fit_s']:.1f} s", "", "| layer | channels | estimated neurons | measured neurons | estimated s (cumulative) "
             "| IG steps of the stage above: calibration / fit (residual) |", "|---|---|---|---|---|---|"]
    measured = {lay["name"]: lay for lay in run["layers"]}
    above = {}
    names = [lay["name"] for lay in run["layers"]]
    for upper, lower in zip(names, names[1:]):
        above[lower] = upper
    for row in run["suggestion"]["estimates"]:
        lay = measured.get(row["name"])
        ig = measured.get(above.get(row["name"], ""), {}).get("ig")
        fit = f"{ig.get('steps')} ({ig.get('residual')})" if isinstance(ig, dict) else "not fitted"
        steps = f"{row.get('steps', '-')} / {fit}"
        lines.append(f"| {row['name']} | {row['channels']} | {row['neurons']} | "
                     f"{lay['neurons'] if lay and lay['neurons'] else ('(IG input)' if lay else 'not fitted')} | "
                     f"{row['seconds']:.0f} | {steps} |")
    lines += ["", "Fit timings (s): " + ", ".join(f"{k} {v}" for k, v in run["timings"].items()), "",
              f"- {results['verdict']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.suggested")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.config), args.result)
    else:
        run_section(args)


if __name__ == "__main__":
    main()
