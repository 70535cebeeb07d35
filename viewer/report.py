"""A self-contained HTML report of labeled circuits: the interactive circuit viewer of
:mod:`labeler.viewer` (one graph per class; click a group for its exemplar mosaic, members, labels and
caption; filter groups by label; a debug result highlighted on the graph when given). One file, no
external assets: it opens offline in any browser.
"""

from __future__ import annotations

from pathlib import Path

from neurflow.viewer.data import ReportEntry
from neurflow.viewer.debug import DebugView
from neurflow.viewer.page import render_page

__all__ = ["DebugView", "ReportEntry", "render_report", "write_report"]


def render_report(entries: list[ReportEntry], title: str = "NeurFlow labeled circuits", notes: str = "") -> str:
    return render_page(entries, title, notes)


def write_report(entries: list[ReportEntry], path: str | Path, title: str = "NeurFlow labeled circuits",
                 notes: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(entries, title, notes), encoding="utf-8")
    return path
