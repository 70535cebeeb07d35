"""Bench section ``engine``: speed and peak memory of the engine against the reference-structured
baseline (``bench/reference_baseline.py``), on the demo model.

Three runs, each in its own child process started one after the other (so that each one's peak RSS
is its own: ``VmHWM`` read by the child, and the ``ru_maxrss`` that ``os.wait4`` returns for it):

* ``baseline``: the reference's structure at the exact settings (ig_steps=50);
* ``exact``: the engine at the same settings;
* ``fast``: the engine with ``core.params.FAST_PRESET``.

Only the fit is timed (model loading and imports are not). CPU seconds of the child are reported
next to wall seconds: on a shared machine they are less sensitive to other load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RUN_NAMES = ("baseline", "exact", "fast", "fast_alt")
LABELS = {"baseline": "baseline exact", "exact": "engine exact", "fast": "engine fast",
          "fast_alt": "engine fast (candidate)"}


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# -- child ----------------------------------------------------------------------------------------
def worker(run: str, config: dict[str, Any], result_path: str) -> None:
    import torch

    torch.set_num_threads(config["threads"])
    from bench.demo import load_demo
    from bench.reference_baseline import engine_core_sets, reference_fit
    from neurflow.core.engine import NeurFlow
    from neurflow.core.memory import malloc_for_fit
    from neurflow.progress import Meter, ProgressEvent

    if run != "baseline":  # the engine's runs as `neurflow run` and the service's workers do them
        malloc = {"exact": "exact", "fast_alt": config.get("alt_malloc") or "fast"}.get(run, "fast")
        malloc_for_fit(malloc)
    demo = load_demo(config["images"], config["target_class"], config["model"])
    device = config["device"]
    settings = dict(config["settings"])
    if run == "fast":
        settings.update(config["fast_preset"])
    elif run == "fast_alt":
        settings.update(config["fast_alt_preset"])
    rss_start = _status_mb("VmRSS")
    last = [0.0]

    def progress(event: ProgressEvent) -> None:
        now = time.perf_counter()
        if now - last[0] > 30 or event.done == event.total and event.stage.startswith("ig"):
            last[0] = now
            print(f"  [{run}] {event.describe()}", file=sys.stderr, flush=True)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cpu0, t0 = time.process_time(), time.perf_counter()
    if run == "baseline":
        res = reference_fit(demo.model, demo.pixels, demo.target_class, config["layers"], device=device,
                            progress=Meter(progress), **settings)
        core, bottom, timings, n_patches = res.core, res.bottom_chosen, res.timings, res.n_patches
    else:
        engine = NeurFlow(config["layers"], select="all", device=device, progress=progress, **settings)
        circuit = engine.fit(demo.model, demo.pixels, demo.target_class).circuit_
        core, bottom = engine_core_sets(circuit)
        timings, n_patches = dict(circuit.timings), circuit.fit.n_patches
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out = {
        "run": run, "settings": settings, "wall_s": wall, "cpu_s": cpu, "core": core, "bottom_chosen": bottom,
        "timings": {k: round(float(v), 3) for k, v in timings.items()}, "n_patches": n_patches,
        "rss_start_mb": rss_start, "vmhwm_mb": _status_mb("VmHWM"), "demo": demo.info,
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["device_name"] = torch.cuda.get_device_name()
    Path(result_path).write_text(json.dumps(out))


# -- parent ---------------------------------------------------------------------------------------
def _run_child(run: str, config: dict[str, Any]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_path = fh.name
    cmd = [sys.executable, "-m", "bench.engine_speed", "--worker", run, "--config", json.dumps(config),
           "--result", result_path]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"bench run {run!r} failed with exit code {proc.returncode}")
    out = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    out["child_wall_s"] = time.perf_counter() - started
    out["peak_rss_mb"] = usage.ru_maxrss / 1024.0  # Linux: KiB
    out["loadavg_after"] = os.getloadavg()[0]
    return out


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def compare(ref: dict[str, Any], other: dict[str, Any], layers: list[str]) -> dict[str, Any]:
    """Per-layer Jaccard of core-neuron sets. The mean is over the fitted layers below the target
    layer (the target layer's set is the class itself in every run); the bottom layer's kept channels
    (the last layer's edge targets) are compared too and reported separately."""
    per_layer = {name: jaccard(ref["core"][name], other["core"][name]) for name in layers[:-1]}
    below = [per_layer[name] for name in layers[1:-1]]
    bottom = jaccard(ref["bottom_chosen"], other["bottom_chosen"])
    identical = all(v == 1.0 for v in per_layer.values()) and bottom == 1.0
    return {"per_layer": per_layer, "bottom_edges": bottom, "identical": identical,
            "mean_jaccard": sum(below) / len(below) if below else 1.0}


def _fit_mb(r: dict[str, Any]) -> float:
    """Memory the fit itself added: peak RSS minus RSS just before the fit (imports, model, images)."""
    return max(r["vmhwm_mb"] - r["rss_start_mb"], 0.0)


def table(results: dict[str, Any]) -> str:
    runs = results["runs"]
    base = runs.get("baseline")
    layers = results["config"]["layers"]
    head = ("| run | ig_steps | batch | wall s | speed-up | process s | process speed-up | CPU s | CPU speed-up "
            "| peak RSS MB | RSS ratio | fit MB | fit-memory ratio | core neurons per layer | same sets | mean Jaccard |")
    lines = [head, "|" + "---|" * 16]
    for name, r in runs.items():
        counts = "/".join(str(len(r["core"][n])) for n in layers[:-1]) + f" (+{len(r['bottom_chosen'])})"
        speed = f"{base['wall_s'] / r['wall_s']:.2f}x" if base else "-"
        process = f"{base['child_wall_s'] / r['child_wall_s']:.2f}x" if base else "-"
        cpu_speed = f"{base['cpu_s'] / r['cpu_s']:.2f}x" if base else "-"
        mem = f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else "-"
        fit_mem = f"{_fit_mb(r) / _fit_mb(base):.2f}" if base and _fit_mb(base) > 0 else "-"
        cmp_ = results["comparisons"].get(name)
        same = "-" if cmp_ is None else ("yes" if cmp_["identical"] else "no")
        jac = "-" if cmp_ is None else f"{cmp_['mean_jaccard']:.3f}"
        lines.append(f"| {LABELS.get(name, name)} | {r['settings']['ig_steps']} | {r['settings'].get('batch_size', 8)} "
                     f"| {r['wall_s']:.1f} | {speed} | {r['child_wall_s']:.1f} | {process} "
                     f"| {r['cpu_s']:.1f} | {cpu_speed} | {r['peak_rss_mb']:.0f} | {mem} "
                     f"| {_fit_mb(r):.0f} | {fit_mem} | {counts} | {same} | {jac} |")
    return "\n".join(lines)


def verdicts(results: dict[str, Any]) -> list[str]:
    runs, cmp_ = results["runs"], results["comparisons"]
    gpu = results["config"]["device"].startswith("cuda")
    out = []
    if "baseline" in runs and "exact" in runs:
        s = runs["baseline"]["wall_s"] / runs["exact"]["wall_s"]
        need = 10.0 if gpu else 2.0
        out.append(f"engine exact vs baseline: {s:.2f}x (target >= {need:g}x) -> {'PASS' if s >= need else 'FAIL'}; "
                   f"identical core-neuron sets: {'PASS' if cmp_['exact']['identical'] else 'FAIL'}")
        c = runs["baseline"]["cpu_s"] / runs["exact"]["cpu_s"]
        out.append(f"engine exact vs baseline in CPU seconds: {c:.2f}x")
        w = runs["baseline"]["child_wall_s"] / runs["exact"]["child_wall_s"]
        out.append(f"engine exact vs baseline, whole processes (start, imports, model and images, fit): {w:.2f}x")
        if _fit_mb(runs["baseline"]) > 0:
            f = _fit_mb(runs["exact"]) / _fit_mb(runs["baseline"])
            out.append(f"engine exact fit memory / baseline (peak RSS above the RSS just before the fit): {f:.2f} "
                       f"(target <= 0.5) -> {'PASS' if f <= 0.5 else 'FAIL'}")
        m = runs["exact"]["peak_rss_mb"] / runs["baseline"]["peak_rss_mb"]
        out.append(f"whole-process peak RSS, engine exact / baseline: {m:.2f} (for information: both processes hold "
                   f"{runs['exact']['rss_start_mb']:.0f} MB before the fit starts: torch, the model, the images)")
    for name in runs:
        if "baseline" in runs and name.startswith("fast") and name in cmp_:
            s = runs["baseline"]["wall_s"] / runs[name]["wall_s"]
            c = runs["baseline"]["cpu_s"] / runs[name]["cpu_s"]
            j = cmp_[name]["mean_jaccard"]
            preset = {k: v for k, v in runs[name]["settings"].items() if runs["baseline"]["settings"].get(k) != v}
            w = runs["baseline"]["child_wall_s"] / runs[name]["child_wall_s"]
            out.append(f"{LABELS.get(name, name)} {preset}: vs baseline {s:.2f}x wall, {c:.2f}x CPU (target >= 15x) "
                       f"-> {'PASS' if s >= 15 else 'FAIL'}; whole process {w:.2f}x; mean Jaccard vs exact {j:.3f} (target >= 0.9) -> "
                       f"{'PASS' if j >= 0.9 else 'FAIL'}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 images, 3 fitted layers, tau=8")
    parser.add_argument("--images", type=int, default=None, help="images of the target class (default 80)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=("world", "random", "resnet50"), default="world",
                        help="the trained world resnet18 (default), an untrained one on random inputs, or the "
                             "real size: an untrained torchvision resnet50 at 224 px with its own layer list")
    parser.add_argument("--target-class", type=int, default=0)
    parser.add_argument("--runs", default="baseline,exact,fast", help="comma-separated subset of baseline,exact,fast")
    parser.add_argument("--fast-preset", default=None, help="JSON dict overriding core.params.FAST_PRESET")
    parser.add_argument("--fast-alt", default=None,
                        help="JSON dict: also run this candidate fast preset (run name fast_alt)")
    parser.add_argument("--alt-malloc", choices=["exact", "fast"], default=None,
                        help="malloc setting of the fast_alt run (core.memory.FIT_MALLOC; default: fast's)")
    parser.add_argument("--fitted-layers", type=int, default=None,
                        help="fit only the first N layers of the bench's layer list (default 6; 3 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the core count)")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/latest.json, "
                                                     "quick.json with --quick)")


def run_section(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench.demo import LAYERS, QUICK_LAYERS, REAL_LAYERS, ensure_model
    from neurflow.core.params import FAST_PRESET

    quick = args.quick
    full = REAL_LAYERS if args.model == "resnet50" else LAYERS
    config = {
        "layers": full[:args.fitted_layers + 1] if args.fitted_layers else (QUICK_LAYERS if quick else full),
        "images": args.images or (16 if quick else 80),
        "target_class": args.target_class,
        "model": args.model,
        "device": args.device,
        "threads": args.threads or n_cores(),
        "settings": {"tau": 8 if quick else 16, "top_n": 50, "granularities": [1.0, 0.5, 0.25],
                     "stride_ratio": 0.5, "ig_steps": 50, "batch_size": 8},
        "fast_preset": json.loads(args.fast_preset) if args.fast_preset else dict(FAST_PRESET),
        "fast_alt_preset": json.loads(args.fast_alt) if args.fast_alt else None,
        "alt_malloc": getattr(args, "alt_malloc", None),
        "quick": quick,
    }
    runs_wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    if args.fast_alt and "fast_alt" not in runs_wanted:
        runs_wanted.append("fast_alt")
    unknown = set(runs_wanted) - set(RUN_NAMES)
    if unknown:
        raise SystemExit(f"unknown run(s) {sorted(unknown)}; choose from {RUN_NAMES}")
    ensure_model(args.model)
    print(f"engine bench: {config['images']} images, layers {config['layers']}, settings {config['settings']}, "
          f"fast preset {config['fast_preset']}, device {config['device']}, {config['threads']} threads", flush=True)
    results: dict[str, Any] = {
        "section": "engine",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "processor": _cpu_name(), "cores": n_cores(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "loadavg_start": os.getloadavg()[0]},
        "commit": _git_commit(),
        "config": config,
        "runs": {},
        "comparisons": {},
    }
    for run in runs_wanted:
        print(f"-- {LABELS[run]} ...", flush=True)
        r = _run_child(run, config)
        results["runs"][run] = r
        print(f"   {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    if "device_name" in next(iter(results["runs"].values()), {}):
        results["machine"]["device_name"] = next(iter(results["runs"].values()))["device_name"]
    layers = config["layers"]
    exact_ref = results["runs"].get("baseline") or results["runs"].get("exact")
    for name in ("exact", "fast", "fast_alt"):
        if name in results["runs"] and exact_ref is not None and exact_ref is not results["runs"][name]:
            results["comparisons"][name] = compare(exact_ref, results["runs"][name], layers)
    if "fast" in results["runs"] and "exact" in results["runs"]:
        results["comparisons"]["fast_vs_engine_exact"] = compare(results["runs"]["exact"], results["runs"]["fast"], layers)
    results["table_md"] = table(results)
    results["verdicts"] = verdicts(results)
    print()
    print(results["table_md"])
    print()
    for line in results["verdicts"]:
        print(line)
    _save(results, args)
    return results


def render(path: Path) -> None:
    results = json.loads(path.read_text())
    ref = results["runs"].get("baseline") or results["runs"].get("exact")
    for name, r in results["runs"].items():
        if ref is not None and r is not ref:
            results["comparisons"][name] = compare(ref, r, results["config"]["layers"])
    results["table_md"] = table(results)
    results["verdicts"] = verdicts(results)
    print(results["table_md"])
    print()
    print("\n".join(results["verdicts"]))
    _write(results, path)


def _save(results: dict[str, Any], args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else RESULTS / ("quick.json" if args.quick else "latest.json")
    _write(results, out)


def _write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    md = out.with_suffix(".md")
    cfg = results["config"]
    runs = results["runs"]
    demo = next(iter(runs.values()))["demo"] if runs else {}
    header = (f"Engine bench ({results['started']}, commit {results['commit']}): {demo.get('model', cfg['model'])}, "
              f"{demo.get('images', '')} ({next(iter(runs.values()))['n_patches'] if runs else '?'} patches), "
              f"layers {', '.join(cfg['layers'])}, tau={cfg['settings']['tau']}, top_n={cfg['settings']['top_n']}, "
              f"device {cfg['device']} ({results['machine'].get('device_name') or results['machine']['processor']}, "
              f"{cfg['threads']} threads), fast preset {cfg['fast_preset']}.")
    md.write_text(header + "\n\n" + results["table_md"] + "\n\n" + "\n".join(f"- {v}" for v in results["verdicts"]) + "\n")
    print(f"\nresults: {out} and {md}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_speed")
    parser.add_argument("--worker", choices=RUN_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--render", metavar="JSON", help="re-print the table of a saved results file and rewrite "
                                                          "its table, verdicts and .md")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.render:
        render(Path(args.render))
    elif args.worker:
        worker(args.worker, json.loads(args.config), args.result)
    else:
        run_section(args)


if __name__ == "__main__":
    main()
