"""Means over classes and neurons of :class:`ExperimentResults`: what the plots draw and the CLI prints."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .results import EdgeFidelityResult, ExperimentResults, FidelityResult, OptimalityResult


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def pair_name(upper: str, lower: str) -> str:
    return f"{upper}←{lower}"


def fidelity_means(fid: FidelityResult) -> dict[tuple[int, str, str], list[tuple[str, float, float]]]:
    """``{(tau, mode, operation): [(layer, core accuracy, random accuracy), ...]}``, means over classes."""
    acc: dict[tuple[int, str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    order: dict[tuple[int, str, str], list[str]] = defaultdict(list)
    for curve in fid.curves:
        key = (curve.tau, curve.mode, curve.operation)
        for p in curve.points:
            if p.layer not in order[key]:
                order[key].append(p.layer)
            acc[key][p.layer].append((p.core_accuracy, p.random_accuracy))
    return {key: [(layer, _mean(c for c, _ in acc[key][layer]), _mean(r for _, r in acc[key][layer]))
                  for layer in order[key]] for key in sorted(acc)}


def pairs_of(rows) -> list[str]:
    return list(dict.fromkeys(pair_name(r.upper, r.lower) for r in rows))


def correlation_means(edge: EdgeFidelityResult) -> dict[tuple[str, int], dict[str, float | None]]:
    """``{(method, subset size): {pair: mean Pearson r}}`` over classes and neurons."""
    found: dict[tuple[str, int], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in edge.rows:
        found[(r.method, r.subset_size)][pair_name(r.upper, r.lower)].append(r.pearson)
    return {key: {pair: _mean(v) for pair, v in by_pair.items()} for key, by_pair in found.items()}


def method_means(edge: EdgeFidelityResult) -> dict[str, dict[str, float | None]]:
    """``{method: {pair: mean Pearson r over subset sizes, classes and neurons}}`` (the paper's comparison)."""
    found: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in edge.rows:
        found[r.method][pair_name(r.upper, r.lower)].append(r.pearson)
    return {m: {pair: _mean(v) for pair, v in by_pair.items()} for m, by_pair in found.items()}


def sum_mean_means(edge: EdgeFidelityResult) -> dict[str, tuple[float | None, float | None]]:
    found: dict[str, list] = defaultdict(list)
    for r in edge.sum_vs_mean:
        found[pair_name(r.upper, r.lower)].append((r.pearson_sum, r.pearson_mean))
    return {pair: (_mean(s for s, _ in v), _mean(m for _, m in v)) for pair, v in found.items()}


def optimality_means(opt: OptimalityResult) -> dict[str, dict[str, float | None]]:
    """``{pair: {"core", "random", "total", "negative", "core_better_fraction", <criterion>...}}``."""
    found: dict[str, list] = defaultdict(list)
    for r in opt.rows:
        found[pair_name(r.upper, r.lower)].append(r)
    out = {}
    for pair, rows in found.items():
        entry = {"core": _mean(r.core_overlap for r in rows), "random": _mean(r.random_overlap for r in rows),
                 "total": _mean(r.total for r in rows), "negative": _mean(r.negative for r in rows),
                 "core_better_fraction": _mean(r.core_better_fraction for r in rows)}
        for name in dict.fromkeys(k for r in rows for k in r.criteria):
            entry[name] = _mean(r.criteria.get(name) for r in rows)
        out[pair] = entry
    return out


def _fmt(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:+.3f}" if v < 0 else f"{v:.3f}"


def summary_lines(res: ExperimentResults) -> list[str]:
    """A plain-text digest of the results (means over classes and neurons)."""
    lines = [f"classes {res.classes}; layers {res.layers}; tau {res.tau} (edge fidelity, optimality)"]
    if res.fidelity:
        lines.append("fidelity: accuracy on images whose true label is the class (core / random)")
        for (tau, mode, op), points in fidelity_means(res.fidelity).items():
            cells = "  ".join(f"{layer}: {c:.2f}/{r:.2f}" for layer, c, r in points)
            lines.append(f"  tau {tau:<3} {mode:<6} {op:<6} {cells}")
    if res.edge_fidelity:
        lines.append("edge fidelity: Pearson r of summed importance vs top-N overlap (mean over subset sizes)")
        for method, by_pair in method_means(res.edge_fidelity).items():
            lines.append(f"  {method:<21}" + "  ".join(f"{p}: {_fmt(v)}" for p, v in by_pair.items()))
        lines.append("sum vs mean (integrated gradients, mixed subset sizes): r_sum / r_mean")
        for pair, (s, m) in sum_mean_means(res.edge_fidelity).items():
            lines.append(f"  {pair}: {_fmt(s)} / {_fmt(m)}")
        lines += [f"  note: {n}" for n in res.edge_fidelity.notes]
    if res.optimality:
        lines.append("optimality: top-N overlap after masking (lower = more damage); core / random; core beats random")
        for pair, e in optimality_means(res.optimality).items():
            others = ", ".join(f"{k} {v:.2f}" for k, v in e.items()
                               if k not in ("core", "random", "total", "negative", "core_better_fraction"))
            lines.append(f"  {pair}: core {e['core']:.2f} / random {e['random']:.2f}; core better than "
                         f"{100 * e['core_better_fraction']:.0f}% of random sets; {others}")
    return lines
