"""The circuit graph as inline SVG: layers as bands (output at the top), groups as nodes showing their
id, top label and confidence, group edges as lines whose width follows |weight| (blue positive, red
negative). Uncertain groups (``status == "uncertain"``) read ``"A or B?"`` and get a dashed outline and
a "?"; corrected groups show the person's label and a check mark. Stable hooks for the page's script and for tests: ``g.node[data-group-id]`` (with
``data-uncertain``), ``line.edge[data-source][data-target]``, ``g.layer-names`` (kept in view by the
script when the graph scrolls sideways) and ``rect.band[data-layer]``.
"""

from __future__ import annotations

import html

from neurflow.core.circuit import Circuit
from neurflow.core.group_label import display_text, is_uncertain
from neurflow.viewer.layout import LEFT, NODE_R, Layout

LABEL_CHARS = 20


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def short(text: str, n: int = LABEL_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def graph_svg(circuit: Circuit, layout: Layout, graph_index: int = 0) -> str:
    w, h = layout.width, layout.height
    parts = [f'<svg class="circuit" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0f} {h:.0f}" '
             f'width="{w:.0f}" height="{h:.0f}" data-graph="{graph_index}" role="img" '
             f'aria-label="circuit graph">']
    for k, band in enumerate(layout.bands):
        parts.append(f'<rect class="band{" alt" if k % 2 else ""}" data-layer="{esc(band.layer)}" x="0" '
                     f'y="{band.top:.1f}" width="{w:.0f}" height="{band.bottom - band.top:.1f}"/>')
        if band.n_groups == 0:
            parts.append(f'<text class="band-note" x="{LEFT:.0f}" y="{(band.top + band.bottom) / 2 + 4:.1f}">'
                         f'{band.n_neurons} core neurons, not grouped (the lowest layer feeds Integrated '
                         f'Gradients only)</text>')
    parts.append('<g class="edges">')
    for e in layout.edges:
        a, b = layout.nodes[e.source], layout.nodes[e.target]
        sign = "pos" if e.weight >= 0 else "neg"
        parts.append(f'<line class="edge {sign}" data-source="{esc(e.source)}" data-target="{esc(e.target)}" '
                     f'data-weight="{e.weight:.6g}" x1="{a.x:.1f}" y1="{a.y + NODE_R:.1f}" x2="{b.x:.1f}" '
                     f'y2="{b.y - NODE_R:.1f}" stroke-width="{e.width:.2f}"><title>{esc(e.source)} → '
                     f'{esc(e.target)}: {e.weight:.3f}</title></line>')
    parts.append('</g><g class="nodes">')
    for _, layer, group in circuit.iter_groups():
        p = layout.nodes[group.id]
        label = display_text(group) or ""
        conf = group.confidence
        conf_text = "" if conf is None else f"{conf:.2f}"
        tip = f"{group.id} ({layer.name}): {label or 'unlabeled'}" + (f", confidence {conf_text}" if conf_text else "")
        # fill strength follows the confidence of the top label (grey when unlabeled)
        level = "none" if conf is None else str(min(4, max(0, int(conf * 5))))
        uncertain = is_uncertain(group)
        if uncertain:
            tip += " (uncertain: review this label)"
        if group.correction is not None:
            tip += f" (corrected by a person, was {group.correction.previous or 'unlabeled'})"
        parts.append(
            f'<g class="node" tabindex="0" role="button" data-group-id="{esc(group.id)}" data-layer="{esc(layer.name)}" '
            f'data-label="{esc(label)}" data-confidence="{conf_text}" data-conf-level="{level}" '
            f'data-uncertain="{"true" if uncertain else "false"}" data-status="{esc(group.status)}">'
            f'<title>{esc(tip)}</title>'
            f'<circle cx="{p.x:.1f}" cy="{p.y:.1f}" r="{NODE_R:.0f}"/>'
            + (f'<text class="nunsure" x="{p.x + NODE_R - 2:.1f}" y="{p.y - NODE_R + 6:.1f}">?</text>'
               if uncertain else "")
            + (f'<text class="ncorrected" x="{p.x + NODE_R - 2:.1f}" y="{p.y - NODE_R + 6:.1f}">✓</text>'
               if group.correction is not None else "") +
            f'<text class="nid" x="{p.x:.1f}" y="{p.y + 4:.1f}">{esc(group.id)}</text>'
            f'<text class="nlabel" x="{p.x:.1f}" y="{p.y + NODE_R + 15:.1f}">{esc(short(label)) if label else "—"}</text>'
            f'<text class="nconf" x="{p.x:.1f}" y="{p.y + NODE_R + 28:.1f}">{conf_text}</text></g>')
    parts.append('</g><g class="layer-names">')
    parts.append(f'<rect class="names-bg" x="0" y="0" width="{LEFT - 12:.0f}" height="{h:.0f}"/>')
    for name, y in layout.rows:
        parts.append(f'<text class="layer-name" x="8" y="{y + 4:.1f}"><title>{esc(name)}</title>'
                     f'{esc(short(name, 17))}</text>')
    parts.append("</g></svg>")
    return "".join(parts)
