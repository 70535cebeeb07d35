"""The export formats: name -> where its ``export`` function lives, and one entry point for both the
CLI and the API. Modules load lazily so that ``neurflow export graphml`` never imports the Label
Studio SDK."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from neurflow.exports.source import Exported, ExportSource


@dataclass(frozen=True)
class ExportFormat:
    name: str
    module: str  # defines export(source, options) -> Exported
    summary: str
    options: dict[str, str]  # option name -> help text (CLI flags --name, API query parameters)


FORMATS: dict[str, ExportFormat] = {
    f.name: f for f in [
        ExportFormat("labelstudio", "neurflow.exports.labelstudio",
                     "Label Studio: labeling config XML + tasks with predictions (groups; regions on source images)",
                     {"regions": "also export source images with the exemplar boxes as rectangles (default: yes "
                                 "when the source images are available)"}),
        ExportFormat("cvat", "neurflow.exports.cvat",
                     "CVAT for images 1.1 XML: tags per exemplar patch, boxes on source images", {}),
        ExportFormat("datumaro", "neurflow.exports.datumaro",
                     "Datumaro 1.0 JSON: label annotations per exemplar patch, bboxes on source images", {}),
        ExportFormat("fiftyone", "neurflow.exports.fiftyone",
                     "FiftyOne image classification dataset (labels.json + data/)", {}),
        ExportFormat("graphml", "neurflow.exports.graphml",
                     "GraphML of the circuit (networkx): groups as nodes with labels, weighted edges", {}),
    ]
}


def run_export(name: str, source: ExportSource, options: dict[str, Any] | None = None) -> Exported:
    """Export ``source`` in format ``name``; ``ValueError`` names the accepted formats or options."""
    fmt = FORMATS.get(name)
    if fmt is None:
        raise ValueError(f"unknown export format {name!r}; accepted: {', '.join(FORMATS)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        accepted = ", ".join(fmt.options) or "none"
        raise ValueError(f"unknown option(s) {unknown} for {name}; accepted: {accepted}")
    return importlib.import_module(fmt.module).export(source, options)


def flag(options: dict[str, Any], name: str, default: bool) -> bool:
    """A yes/no option given as a bool or as text (CLI ``--option regions=no``, API ``?regions=false``)."""
    value = options.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name} takes yes/no (true/false, 1/0), got {value!r}")
