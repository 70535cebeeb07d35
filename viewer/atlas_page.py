"""The atlas page: the concept atlas of a model as one self-contained HTML document.

A class-by-concept matrix (rows: classes; columns: shared concepts, by layer; a cell's shade is the
class's strength in the concept), a label search ("which classes use a concept like X"), the class
pairs that share a sub-circuit, the neurons that serve many classes, and a drill-down: clicking a
class shows its groups and their concepts, and its circuit viewer, either embedded (the file version:
each class's viewer page travels inside this one and opens in a frame, from a blob URL, on click) or from a URL (the
served version: ``/v1/circuits/{circuit_id}/report``).

Test hooks: ``#atlas-data``, ``#atlas-search``, ``#atlas-match-count`` (``data-matches``),
``table#atlas-matrix`` (``tr[data-class]``, ``td.cell[data-concept]``, ``th.concept[data-concept]``),
``#atlas-detail`` (``data-class`` or ``data-concept``; ``iframe.circuit-viewer``, ``a.report-link``),
``table#atlas-pairs``, ``table.atlas-neurons``, ``#atlas-circuits``.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from neurflow.atlas.document import Atlas
from neurflow.viewer.data import ReportEntry
from neurflow.viewer.page import json_block, render_page, static_text
from neurflow.viewer.svg import esc


def atlas_data(atlas: Atlas, title: str, report_url: str | None) -> dict:
    return {"title": title, "report_url": report_url, "atlas": msgspec.to_builtins(atlas)}


def render_atlas_page(atlas: Atlas, *, entries: list[ReportEntry] | None = None, report_url: str | None = None,
                      title: str | None = None) -> str:
    """The page. ``entries``: circuits whose viewers are embedded (by class index); ``report_url``: a
    template with ``{circuit_id}`` that opens a class's viewer instead (when it has no embedded one)."""
    title = title or f"NeurFlow concept atlas: {atlas.model.arch}, {len(atlas.classes)} classes"
    embedded = {str(e.circuit.target.class_index): render_page([e], title=e.title) for e in entries or []}
    n_concepts = sum(len(layer.concepts) for layer in atlas.layers)
    s = atlas.settings
    summary = (f"{len(atlas.classes)} classes, {n_concepts} shared concepts over {len(atlas.layers)} layers, "
               f"{len(atlas.subcircuits) + atlas.subcircuits_omitted} class pairs sharing a sub-circuit. "
               f"A shared concept: groups of at least {s.min_classes} classes whose member neurons overlap "
               f"(Jaccard at least {s.jaccard:g}).")
    warnings = "".join(f"<li>{esc(w)}</li>" for w in atlas.warnings)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{esc(title)}</title><style>{static_text('atlas.css')}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p class='notes'>{esc(summary)}</p>"
        f"{f'<ul class=warnings>{warnings}</ul>' if warnings else ''}"
        "<div id='toolbar'><input id='atlas-search' type='search' autocomplete='off' "
        "placeholder='Which classes use a concept like…' aria-label='Search concepts by label'>"
        "<span id='atlas-match-count' aria-live='polite'></span>"
        "<span class='legend'>cell shade: the class's strength in the concept (overlap with its core neurons)</span>"
        "</div></header>"
        "<main><div id='atlas-main'>"
        "<section id='matrix-section'><h2>Classes × shared concepts</h2>"
        "<div class='matrix-wrap'><table id='atlas-matrix'></table></div></section>"
        "<section id='pairs-section'><h2>Classes that share a sub-circuit</h2><div id='pairs-host'></div></section>"
        "<section id='neurons-section'><h2>Neurons that serve many classes</h2><div id='neurons-host'></div></section>"
        "<section id='labels-section'><h2>Labels that recur across classes</h2><div id='labels-host'></div></section>"
        "</div><aside id='atlas-detail' aria-live='polite'><p class='hint'>Click a class for its groups and its "
        "circuit, or a cell or column for the shared concept.</p></aside></main>"
        f"<script type='application/json' id='atlas-data'>{json_block(atlas_data(atlas, title, report_url))}</script>"
        f"<script type='application/json' id='atlas-circuits'>{json_block(embedded)}</script>"
        f"<script>{static_text('atlas.js')}</script></body></html>")


def write_atlas_page(atlas: Atlas, path: str | Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_atlas_page(atlas, **kwargs), encoding="utf-8")
    return path
