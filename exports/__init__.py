"""Exports of a labeled circuit to the tools where people work.

One module per target format; each exposes ``export(source: ExportSource, options: dict) -> Exported``
and is listed in :data:`labeler.exports.registry.FORMATS`. The CLI (``neurflow export FORMAT``) and
the API (``GET /v1/circuits/{id}/exports/{format}``) both go through :func:`run_export`, so a new
format needs one module and one registry line.
"""

from neurflow.exports.registry import FORMATS, ExportFormat, run_export
from neurflow.exports.source import Exported, ExportSource

__all__ = ["FORMATS", "ExportFormat", "Exported", "ExportSource", "run_export"]
