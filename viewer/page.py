"""The viewer page: one self-contained HTML document (inline CSS, inline script, inline SVG, the data
as a JSON block, pictures as base64). No network access: it works opened from disk.

Test hooks: ``#search``, ``#match-count``, ``#hide-nonmatching``, ``#zoom-in``, ``#zoom-out``,
``#zoom-fit``, ``#zoom-level``, ``#detail`` (``img.mosaic``,
``ol.labels``, ``ul.members``, ``.caption``), ``section.graph-section[data-graph]``,
``g.node[data-group-id]``, ``#debug``, ``#viewer-data``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from neurflow.viewer.data import ReportEntry, viewer_data
from neurflow.viewer.layout import layout_circuit
from neurflow.viewer.svg import esc, graph_svg


@lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """A file of ``viewer/static`` (shipped as package data)."""
    return resources.files("neurflow.viewer").joinpath("static", name).read_text(encoding="utf-8")


def json_block(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``</script>`` or ``<!--`` can appear in it."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_page(entries: list[ReportEntry], title: str = "NeurFlow labeled circuits", notes: str = "") -> str:
    layouts = [layout_circuit(e.circuit) for e in entries]
    data = viewer_data(entries, title, notes, layouts)
    sections = []
    for i, (entry, layout) in enumerate(zip(entries, layouts)):
        g = data["graphs"][i]
        sections.append(
            f'<section class="graph-section" id="graph-{i}" data-graph="{i}">'
            f'<h2>{esc(g["title"])}</h2><p class="meta">{esc(g["meta"])}</p>'
            f'<div class="graph">{graph_svg(entry.circuit, layout, i)}</div>'
            f'<div class="debug-host"></div>'
            f'<details class="group-table"><summary>All groups ({len(g["groups"])})</summary>'
            f'<div class="table-host"></div></details></section>')
    body = "".join(sections) or '<p class="empty">No circuits.</p>'
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"  # no favicon request: the page loads nothing from anywhere
        f"<title>{esc(title)}</title><style>{static_text('viewer.css')}</style></head><body>"
        f"<header><h1>{esc(title)}</h1>{f'<p class=notes>{esc(notes)}</p>' if notes else ''}"
        "<div id='toolbar'><input id='search' type='search' placeholder='Filter groups by label' "
        "autocomplete='off' aria-label='Filter groups by label'>"
        "<label><input id='hide-nonmatching' type='checkbox'> hide non-matching</label>"
        "<span id='match-count' aria-live='polite'></span>"
        "<span id='zoom'><button id='zoom-out' type='button' aria-label='zoom out'>−</button>"
        "<button id='zoom-in' type='button' aria-label='zoom in'>+</button>"
        "<button id='zoom-fit' type='button'>fit to width</button><span id='zoom-level'></span></span>"
        "<span class='legend'><span class='unsure'>?</span> uncertain: the evidence disagrees, both "
        "candidates shown (\"A or B?\"): review first; <span class='corrected'>✓</span> corrected by a person"
        "</span></div></header>"
        f"<main><div id='graphs'>{body}</div>"
        "<aside id='detail' aria-live='polite'><p class='hint'>Click a group to see its exemplars, "
        "members, labels and caption.</p></aside></main>"
        f"<script type='application/json' id='viewer-data'>{json_block(data)}</script>"
        f"<script>{static_text('viewer.js')}</script></body></html>")
