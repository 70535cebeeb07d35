"""The interactive circuit viewer: one self-contained HTML page per report (see ``page.py``).

``layout`` places groups, ``svg`` draws the graph, ``data`` builds the embedded JSON, ``debug`` adapts
debug results, ``page`` assembles the document, ``cli`` is ``neurflow report``.
"""

from neurflow.viewer.data import ReportEntry, viewer_data
from neurflow.viewer.debug import DebugView
from neurflow.viewer.page import render_page

__all__ = ["DebugView", "ReportEntry", "render_page", "viewer_data"]
