"""The fast preset's contract: per-layer Jaccard of core-neuron sets >= 0.95 against exact, on every
model, world and size tried (``python -m bench.run fidelity``).

Each case fits one class with ``preset="exact"`` and ``preset="fast"`` (``select="all"``, the same
images, one process, one torch thread by default: these are quality numbers, and the fit seconds are
for information) and compares, per fitted layer below the class, the core-neuron sets (the next
layer's core neurons; for the last fitted layer the IG input layer's kept channels). The table also
shows what the fast preset chose per layer (``Layer.ig``: steps / residual / neurons resampled).

Cases (``--fidelity-cases`` picks some by name):

* ``demo-*``: the standard world's resnet18 at 64 px (the demo model of the engine section) with
  small and large tau and image counts;
* ``suite-*``: the network of every label-quality suite world already built in the cache (a world
  not built is listed as skipped: training each takes minutes; ``python -m neurflow.world.suite``
  builds them);
* ``resnet50-224``: torchvision's ResNet-50 at 224 px, seeded random weights, smooth random images;
* ``vit``: a torchvision VisionTransformer (6 encoder layers, 64 px, patches of 8) with seeded random
  weights: token layers, GELU and LayerNorm.

Results: ``bench/results/fidelity.json`` and ``fidelity.md`` (``--fidelity-out`` changes the stem).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.reference_baseline import jaccard

# one definition of the bench's world layers: the suite's (the last two stages of resnet18)
TARGET = 0.95
WORLD_LAYERS = ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0"]
VIT_LAYERS = ["heads.head", "encoder.layers.encoder_layer_5", "encoder.layers.encoder_layer_4",
              "encoder.layers.encoder_layer_3"]
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    name: str
    load: Callable[[], tuple[torch.nn.Module, torch.Tensor, str]]  # model, pixels, description
    layers: list[str]
    tau: int
    target_class: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    suite_world: str | None = None  # runs only when this suite world's network is built


def _world_images(wm, split: str, target_class: int, n: int) -> torch.Tensor:
    from neurflow.core.images import Preprocess, list_images, open_rgb

    meta = wm.meta
    pre = Preprocess(meta["input_size"], meta["mean"], meta["std"])
    files = list_images(wm.images(split) / wm.class_names[target_class])[:n]
    if len(files) < n:
        raise ValueError(f"only {len(files)} {split} images of class {target_class} in {wm.world_root}, {n} wanted")
    return torch.stack([pre(open_rgb(f)) for f in files])


def _demo(n: int, split: str = "train", target_class: int = 0):
    def load():
        from neurflow.world.train import ensure_world_model

        wm = ensure_world_model(progress=False)
        return (wm.load_model(), _world_images(wm, split, target_class, n),
                f"standard world resnet18 64 px ({wm.directory.name}), first {n} {split} images of class {target_class}")
    return load


def _suite_model(name: str):
    """The suite world's cached network, or None when it is not built (nothing is trained here)."""
    from neurflow.world.cache import world_dir
    from neurflow.world.suite import SUITE, model_train_config
    from neurflow.world.train import META_FILE, WorldModel, model_dir

    world = SUITE[name]
    root = world_dir(world.config)
    directory = model_dir(root, model_train_config(world))
    return WorldModel.load(directory, root) if (directory / META_FILE).is_file() else None


def _suite(name: str, n: int, target_class: int):
    def load():
        wm = _suite_model(name)
        return (wm.load_model(), _world_images(wm, "heldout", target_class, n),
                f"suite world {name} resnet18 ({wm.directory.name}), first {n} held-out images of class {target_class}")
    return load


def _resnet50(n: int):
    def load():
        from bench.demo import load_demo

        demo = load_demo(n, 0, "resnet50")
        return demo.model, demo.pixels, f"random ResNet-50 224 px, {n} smooth random images"
    return load


def _vit(n: int):
    def load():
        import torch.nn.functional as F
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.VisionTransformer(image_size=64, patch_size=8, num_layers=6, num_heads=4,
                                                     hidden_dim=128, mlp_dim=256, num_classes=10).eval()
        noise = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        pixels = F.interpolate(noise, size=64, mode="bilinear", align_corners=False)
        return model, pixels, f"random VisionTransformer (6 layers, 128 wide, 64 px, patch 8), {n} smooth random images"
    return load


def cases() -> list[Case]:
    from neurflow.world.suite import SUITE

    out = [
        Case("demo-16img-tau8", _demo(16), WORLD_LAYERS, 8),
        Case("demo-8img-tau32", _demo(8), WORLD_LAYERS[:3], 32),
        Case("demo-40img-tau4", _demo(40), WORLD_LAYERS, 4),
    ]
    for name, world in SUITE.items():
        out.append(Case(f"suite-{name}-8img-tau8", _suite(name, 8, world.classes[0]), WORLD_LAYERS[:4], 8,
                        world.classes[0], suite_world=name))
    out += [
        Case("resnet50-224-2img-tau16", _resnet50(2), ["fc", "layer4.2", "layer4.1"], 16),
        Case("vit-6img-tau8", _vit(6), VIT_LAYERS[:3], 8),
    ]
    return out


def _core_sets(circuit) -> dict[str, list[int]]:
    """Per fitted layer: the core neurons it passes down (the union of its concepts' edge targets)."""
    return {layer.name: sorted({e.neuron for n in layer.neurons for c in n.concepts for e in c.edges})
            for layer in circuit.layers[:-1]}


def run_case(case: Case, fast: dict[str, Any], exact: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both fits of ``case`` (``fast``: parameters laid over the fast preset); ``exact``: a saved exact
    run of the same case to reuse (the engine is deterministic)."""
    from neurflow.core.engine import NeurFlow

    model, pixels, description = case.load()
    runs: dict[str, Any] = {"exact": exact} if exact else {}
    for preset in [p for p in ("exact", "fast") if p not in runs]:
        started = time.perf_counter()
        circuit = NeurFlow(case.layers, tau=case.tau, select="all", preset=preset, **case.settings,
                           **(fast if preset == "fast" else {})).fit(model, pixels, case.target_class).circuit_
        runs[preset] = {"fit_s": round(time.perf_counter() - started, 1), "core": _core_sets(circuit),
                        "ig": {layer.name: {"steps": layer.ig.steps, "residual": layer.ig.residual,
                                            "pairs": layer.ig.pairs, "resampled": layer.ig.resampled}
                               for layer in circuit.layers[:-1]}}
    per_layer = {name: round(jaccard(runs["exact"]["core"][name], runs["fast"]["core"][name]), 3)
                 for name in case.layers[:-1]}
    return {"case": case.name, "model": description, "layers": case.layers, "tau": case.tau, "fast_overrides": fast,
            "target_class": case.target_class, "n_images": len(pixels), "runs": runs, "jaccard": per_layer,
            "min_jaccard": min(per_layer.values()), "pass": min(per_layer.values()) >= TARGET}


def table(results: dict[str, Any]) -> str:
    lines = ["| case | model and images | layers (tau) | Jaccard per fitted layer | min | fast: steps / residual / resampled per layer | fast pairs / exact pairs | fit s fast (exact) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["cases"]:
        if "skipped" in r:
            lines.append(f"| {r['case']} | skipped: {r['skipped']} | | | | | | |")
            continue
        fast, exact = r["runs"]["fast"], r["runs"]["exact"]
        ig = ", ".join(f"{v['steps']}/{v['residual']:.3f}/{v['resampled']}" if v["residual"] is not None
                       else f"{v['steps']}/-/{v['resampled']}" for v in fast["ig"].values())
        pairs = f"{sum(v['pairs'] for v in fast['ig'].values())} / {sum(v['pairs'] for v in exact['ig'].values())}"
        per = " / ".join(f"{v:.3f}" for v in r["jaccard"].values())
        mark = "" if r["pass"] else " FAIL"
        lines.append(f"| {r['case']} | {r['model']} | {r['layers'][0]} .. {r['layers'][-1]} ({r['tau']}) | {per} | "
                     f"**{r['min_jaccard']:.3f}**{mark} | {ig} | {pairs} | {fast['fit_s']} ({exact['fit_s']}) |")
    return "\n".join(lines)


def _write(results: dict[str, Any], stem: str) -> str:
    """Write the results so far to bench/results/STEM.json and .md; the markdown."""
    results["load_after"] = os.getloadavg()
    done = [r for r in results["cases"] if "skipped" not in r]
    results["all_pass"] = all(r["pass"] for r in done)
    fast = f", fast preset with {json.dumps(results['fast_overrides'])}" if results["fast_overrides"] else ""
    text = (f"Fidelity of the fast preset against exact ({results['started']}, commit {results['commit']}, "
            f"{results['threads']} torch thread(s), load {results['load_before'][0]:.1f} before / "
            f"{results['load_after'][0]:.1f} after{fast}): target min per-layer Jaccard >= {TARGET}: "
            f"{'PASS' if results['all_pass'] else 'FAIL'} on {len(done)} case(s)\n\n" + table(results) + "\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{stem}.md").write_text(text)
    return text


def add_arguments(parser) -> None:
    parser.add_argument("--fidelity-cases", default=None,
                        help="comma-separated case names (or name prefixes) of the fidelity section; default: all")
    parser.add_argument("--fidelity-threads", type=int, default=1, help="torch threads of the fidelity section")
    parser.add_argument("--fidelity-out", default="fidelity", help="stem of the fidelity results in bench/results/")
    parser.add_argument("--fidelity-fast", default="{}", help="JSON dict of parameters laid over the fast preset "
                                                             "(a candidate setting)")
    parser.add_argument("--fidelity-reuse-exact", default=None,
                        help="a saved fidelity results JSON: its exact runs of the same cases are reused")


def run_section(args) -> dict[str, Any]:
    torch.set_num_threads(args.fidelity_threads)
    wanted = args.fidelity_cases.split(",") if args.fidelity_cases else None
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.processor() or platform.machine(),
        "threads": args.fidelity_threads, "load_before": os.getloadavg(), "target": TARGET,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "fast_overrides": json.loads(args.fidelity_fast), "cases": []}
    saved = {}
    if args.fidelity_reuse_exact:
        saved = {r["case"]: r["runs"]["exact"] for r in json.loads(Path(args.fidelity_reuse_exact).read_text())["cases"]
                 if "runs" in r}
    for case in cases():
        if wanted and not any(case.name.startswith(w) for w in wanted):
            continue
        if case.suite_world and _suite_model(case.suite_world) is None:
            results["cases"].append({"case": case.name, "skipped": "the suite world's network is not built"})
            print(f"{case.name}: skipped (not built)", flush=True)
            continue
        row = run_case(case, json.loads(args.fidelity_fast), saved.get(case.name))
        results["cases"].append(row)
        print(f"{case.name}: Jaccard per layer {row['jaccard']}, min {row['min_jaccard']:.3f} "
              f"({'PASS' if row['pass'] else 'FAIL'}); fast {row['runs']['fast']['fit_s']} s, "
              f"exact {row['runs']['exact']['fit_s']} s; fast ig {row['runs']['fast']['ig']}", flush=True)
        _write(results, args.fidelity_out)  # after every case: a long run stopped early keeps what it measured
    print(_write(results, args.fidelity_out), flush=True)
    return results
