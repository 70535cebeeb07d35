"""A self-contained HTML report of labeled circuits: an inline SVG circuit graph per class, every
group's exemplar mosaic (inline base64 PNG), its labels and, when known, its ground-truth part and
purity. One file, no external assets: it opens offline in any browser.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from core.circuit import Circuit

NODE_R = 16
ROW_H = 110
COL_W = 120


@dataclass
class ReportEntry:
    circuit: Circuit
    class_name: str | None = None
    mosaics: dict[str, bytes] = field(default_factory=dict)  # group id -> PNG
    scores: dict[str, dict] = field(default_factory=dict)  # group id -> {"majority_part", "purity"}
    circuit_id: str | None = None


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _label(group) -> tuple[str, float | None]:
    if group.labels:
        return group.labels[0].text, group.confidence
    return "", None


def circuit_svg(circuit: Circuit) -> str:
    """Layers from the output (top) down; groups as nodes; group edges as lines (width ~ |weight|)."""
    pos: dict[str, tuple[float, float]] = {}
    width = max([len(layer.groups) for layer in circuit.layers] + [1]) * COL_W + 160
    height = len(circuit.layers) * ROW_H + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11">']
    for i, layer in enumerate(circuit.layers):
        y = 30 + i * ROW_H
        parts.append(f'<text x="6" y="{y + 4}" font-weight="bold">{_esc(layer.name)}</text>')
        n = max(len(layer.groups), 1)
        for k, group in enumerate(layer.groups):
            x = 140 + (k + 0.5) * (width - 160) / n
            pos[group.id] = (x, y)
    top = max([abs(e.weight) for e in circuit.group_edges] + [1e-9])
    for edge in circuit.group_edges:
        if edge.source in pos and edge.target in pos:
            (x0, y0), (x1, y1) = pos[edge.source], pos[edge.target]
            w = 0.5 + 5.0 * abs(edge.weight) / top
            color = "#2b6cb0" if edge.weight >= 0 else "#c53030"
            parts.append(f'<line x1="{x0:.1f}" y1="{y0 + NODE_R}" x2="{x1:.1f}" y2="{y1 - NODE_R}" stroke="{color}" '
                         f'stroke-width="{w:.2f}" stroke-opacity="0.6"><title>{_esc(edge.source)} → {_esc(edge.target)}: '
                         f'{edge.weight:.3f}</title></line>')
    for _, layer, group in circuit.iter_groups():
        x, y = pos[group.id]
        text, conf = _label(group)
        tip = f"{group.id}: {text or 'unlabeled'}" + (f" ({conf:.2f})" if conf is not None else "")
        parts.append(f'<a href="#{_esc(group.id)}"><circle cx="{x:.1f}" cy="{y}" r="{NODE_R}" fill="#edf2f7" '
                     f'stroke="#2d3748"><title>{_esc(tip)}</title></circle></a>')
        parts.append(f'<text x="{x:.1f}" y="{y + 4}" text-anchor="middle">{_esc(group.id)}</text>')
        if text:
            parts.append(f'<text x="{x:.1f}" y="{y + NODE_R + 14}" text-anchor="middle" fill="#4a5568">'
                         f'{_esc(text[:18])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _group_rows(entry: ReportEntry) -> str:
    rows = []
    for _, layer, group in entry.circuit.iter_groups():
        text, conf = _label(group)
        others = ", ".join(f"{_esc(lab.text)} ({lab.score:.2f})" for lab in group.labels[1:4])
        score = entry.scores.get(group.id, {})
        purity = score.get("purity")
        png = entry.mosaics.get(group.id)
        img = (f'<img alt="mosaic of {_esc(group.id)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
               if png else "")
        caption = f"<div class='cap'>{_esc(group.caption.text)}</div>" if group.caption else ""
        rows.append(
            f"<tr id='{_esc(group.id)}'><td>{_esc(layer.name)}</td><td>{_esc(group.id)}</td><td>{len(group.members)}</td>"
            f"<td><b>{_esc(text or '—')}</b>{caption}<div class='alt'>{others}</div></td>"
            f"<td>{'' if conf is None else f'{conf:.2f}'}</td>"
            f"<td>{_esc(score.get('majority_part') or '') if score else ''}</td>"
            f"<td>{'' if purity is None else f'{purity:.2f}'}</td><td>{img}</td></tr>")
    return "".join(rows)


def render_report(entries: list[ReportEntry], title: str = "NeurFlow labeled circuits", notes: str = "") -> str:
    sections = []
    for entry in entries:
        c = entry.circuit
        name = entry.class_name or c.target.name or f"class {c.target.class_index}"
        labeling = c.labeling or {}
        clip = labeling.get("clip", {}) if isinstance(labeling, dict) else {}
        meta = f"model {_esc(c.model.arch)}, {len(c.images)} images, {sum(len(lay.groups) for lay in c.layers)} groups"
        if clip:
            meta += f", labels by CLIP {_esc(clip.get('model', ''))}"
        sections.append(
            f"<section><h2>Class {c.target.class_index}: {_esc(name)}</h2><p class='meta'>{meta}"
            f"{' — circuit ' + _esc(entry.circuit_id) if entry.circuit_id else ''}</p>"
            f"<div class='graph'>{circuit_svg(c)}</div>"
            "<table><thead><tr><th>layer</th><th>group</th><th>members</th><th>label</th><th>confidence</th>"
            "<th>ground-truth part</th><th>purity</th><th>exemplars</th></tr></thead>"
            f"<tbody>{_group_rows(entry)}</tbody></table></section>")
    style = ("body{font-family:sans-serif;margin:2em;color:#1a202c}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #cbd5e0;padding:4px 8px;vertical-align:top;text-align:left}"
             "img{image-rendering:pixelated;max-width:420px}.alt,.meta,.cap{color:#4a5568;font-size:90%}"
             ".graph{overflow-x:auto;border:1px solid #e2e8f0;margin:1em 0}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{style}</style></head><body><h1>{_esc(title)}</h1>"
            f"{f'<p>{_esc(notes)}</p>' if notes else ''}{''.join(sections)}</body></html>")


def write_report(entries: list[ReportEntry], path: str | Path, title: str = "NeurFlow labeled circuits",
                 notes: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(entries, title, notes), encoding="utf-8")
    return path
