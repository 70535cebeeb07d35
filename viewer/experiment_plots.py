"""PNG plots of ``neurflow experiments`` results (matplotlib, headless Agg backend).

One figure per experiment, means over classes and neurons (see :mod:`core.experiments.summary`):
``fidelity.png`` (the paper's four panels), ``edge_fidelity.png`` (correlation per layer pair, per
subset size and per attribution method), ``sum_vs_mean.png`` and ``optimality.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neurflow.core.experiments.results import ExperimentResults  # noqa: E402
from neurflow.core.experiments.summary import (correlation_means, fidelity_means, method_means,  # noqa: E402
                                               optimality_means, sum_mean_means)

_NOT_CRITERIA = ("core", "random", "total", "negative", "core_better_fraction")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fidelity(res: ExperimentResults, path: Path) -> Path:
    means = fidelity_means(res.fidelity)
    taus = sorted({k[0] for k in means})
    colours = plt.get_cmap("viridis")([i / max(1, len(taus)) for i in range(len(taus))])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey=True)
    for row, mode in enumerate(("single", "multi")):
        for col, op in enumerate(("mask", "retain")):
            ax = axes[row][col]
            for tau, colour in zip(taus, colours):
                points = means.get((tau, mode, op), [])
                xs = [p[0] for p in points]
                ax.plot(xs, [p[1] for p in points], "-o", color=colour, label=f"core, tau {tau}")
                ax.plot(xs, [p[2] for p in points], "--x", color=colour, alpha=0.7, label=f"random, tau {tau}")
            where = "this layer" if mode == "single" else "this layer and every layer above"
            ax.set_title(f"{op} core neurons of {where}", fontsize=10)
            ax.set_ylim(-0.03, 1.03)
            ax.tick_params(axis="x", labelrotation=30)
            if col == 0:
                ax.set_ylabel("accuracy on the class's images")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Fidelity of core neurons ({res.arch}; mean over classes {res.classes})", fontsize=11)
    return _save(fig, path)


def plot_edge_fidelity(res: ExperimentResults, path: Path) -> Path:
    edge = res.edge_fidelity
    by_size = correlation_means(edge)
    by_method = method_means(edge)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for (method, size), by_pair in sorted(by_size.items()):
        if method == "integrated_gradients":
            left.plot(list(by_pair), [v if v is not None else float("nan") for v in by_pair.values()], "-o",
                      label=f"{size} masked")
    left.set_title("integrated gradients, by subset size", fontsize=10)
    left.set_ylabel("Pearson r (importance vs top-N overlap)")
    for method, by_pair in by_method.items():
        right.plot(list(by_pair), [v if v is not None else float("nan") for v in by_pair.values()], "-o", label=method)
    right.set_title("mean over subset sizes, by attribution method", fontsize=10)
    for ax in (left, right):
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize=8)
    fig.suptitle(f"Fidelity of interaction weights ({res.arch}; more negative = more faithful)", fontsize=11)
    return _save(fig, path)


def plot_sum_vs_mean(res: ExperimentResults, path: Path) -> Path:
    means = sum_mean_means(res.edge_fidelity)
    pairs = list(means)
    xs = range(len(pairs))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([x - 0.2 for x in xs], [means[p][0] or 0.0 for p in pairs], 0.4, label="sum of importances")
    ax.bar([x + 0.2 for x in xs], [means[p][1] or 0.0 for p in pairs], 0.4, label="mean of importances")
    ax.set_xticks(list(xs), pairs, rotation=30)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(-1.05, 0.3)
    ax.set_ylabel("Pearson r with top-N overlap")
    ax.set_title("Subsets of mixed sizes: sum vs mean of IG importance (more negative = better)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_optimality(res: ExperimentResults, path: Path) -> Path:
    means = optimality_means(res.optimality)
    pairs = list(means)
    criteria = list(dict.fromkeys(k for e in means.values() for k in e if k not in _NOT_CRITERIA))
    series = [("core set", "core"), ("random sets (mean)", "random"), *[(c, c) for c in criteria]]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(7, 2 + 1.6 * len(pairs)), 4.2))
    for k, (label, key) in enumerate(series):
        ax.bar([x - 0.4 + width * (k + 0.5) for x in range(len(pairs))],
               [means[p].get(key) or 0.0 for p in pairs], width, label=label)
    ax.set_xticks(range(len(pairs)), pairs, rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-N overlap after masking (lower = more damage)")
    ax.set_title(f"Optimality of the core set (tau {res.tau}): masking it vs same-size sets", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def write_plots(res: ExperimentResults, out_dir: Path) -> list[Path]:
    """Every plot the results have data for, as PNGs in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if res.fidelity and res.fidelity.curves:
        written.append(plot_fidelity(res, out_dir / "fidelity.png"))
    if res.edge_fidelity and res.edge_fidelity.rows:
        written.append(plot_edge_fidelity(res, out_dir / "edge_fidelity.png"))
        if res.edge_fidelity.sum_vs_mean:
            written.append(plot_sum_vs_mean(res, out_dir / "sum_vs_mean.png"))
    if res.optimality and res.optimality.rows:
        written.append(plot_optimality(res, out_dir / "optimality.png"))
    return written
