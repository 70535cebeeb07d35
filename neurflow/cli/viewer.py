"""``neurflow report CIRCUIT.json [--images DIR] [--out report.html] [--png graph.png] [--debug RESULT.json]``:
the circuit viewer as one self-contained HTML file, and optionally a static PNG of the graph."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neurflow.exports.source import ExportSource


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the interactive circuit viewer (one HTML file) and a PNG of the graph",
                       description="Writes a self-contained HTML viewer of a labeled circuit: the layered graph, "
                                   "a detail panel per group (exemplar mosaic, members, labels, caption), a label "
                                   "search and, with --debug, the groups that fired on a debugged image.")
    p.add_argument("circuit", help="circuit.json (labeled or not)")
    p.add_argument("--images", help="data root of the circuit's images, for the exemplar mosaics "
                                    "(default: where it was labeled from, when that folder exists)")
    p.add_argument("--out", help="HTML file (default: <circuit stem>-report.html next to the circuit)")
    p.add_argument("--png", help="also write a static PNG of the circuit graph here")
    p.add_argument("--debug", help="a debug result JSON (POST /v1/circuits/{id}/debug) to show on the graph")
    p.add_argument("--debug-image", help="the image that debug result was computed on (shown with its firing crops)")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=cmd_report)


def load_debug(result_path: str | None, image_path: str | None):
    from neurflow.viewer.debug import DebugView

    if not result_path:
        if image_path:
            raise ValueError("--debug-image needs --debug RESULT.json")
        return None
    path = Path(result_path)
    if not path.is_file():
        raise FileNotFoundError(f"no debug result {path}")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if isinstance(result, dict) and isinstance(result.get("result"), dict):  # a whole job document
        result = result["result"]
    image = None
    if image_path:
        if not Path(image_path).is_file():
            raise FileNotFoundError(f"no debug image {image_path}")
        image = Path(image_path).read_bytes()
    return DebugView.of(result, image)


def cmd_report(args: argparse.Namespace) -> int:
    from neurflow.viewer.circuit_png import render_circuit_png
    from neurflow.viewer.report import ReportEntry, write_report

    source = ExportSource.from_files(args.circuit, args.images)
    circuit = source.circuit
    mosaics = source.all_mosaics()
    debug = load_debug(args.debug, args.debug_image)
    circuit_path = Path(args.circuit)
    out = Path(args.out) if args.out else circuit_path.with_name(f"{circuit_path.stem}-report.html")
    title = args.title or f"NeurFlow circuit: {circuit_path.name}"
    write_report([ReportEntry(circuit=circuit, mosaics=mosaics, debug=debug)], out, title=title)
    n_groups = sum(1 for _ in circuit.iter_groups())
    print(f"report: {out} ({n_groups} groups, {len(mosaics)} mosaics)")
    if n_groups and not mosaics:
        print("note: no exemplar mosaics (pass --images DIR, the data root of the circuit's images)")
    if args.png:
        drawn = render_circuit_png(circuit, args.png)
        print(f"graph: {drawn['path']} ({len(drawn['nodes'])} nodes, {len(drawn['edges'])} edges, "
              f"{drawn['width']}x{drawn['height']} px)")
    return 0
