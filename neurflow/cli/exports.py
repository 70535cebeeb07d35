"""``neurflow export FORMAT CIRCUIT.json [--images DIR] [--out DIR]``: write an export's files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurflow.exports.registry import FORMATS, run_export
from neurflow.exports.source import ExportSource


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a labeled circuit for an annotation tool or a graph viewer",
                       description="Formats: " + "; ".join(f"{f.name}: {f.summary}" for f in FORMATS.values()))
    p.add_argument("format", choices=sorted(FORMATS), help="the target format")
    p.add_argument("circuit", help="labeled circuit.json")
    p.add_argument("--images", help="data root of the circuit's images (default: where it was labeled from); "
                                    "without it, exports that need pictures leave them out")
    p.add_argument("--out", help="output folder (default: <circuit stem>-<format>/ next to the circuit)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="format option, repeatable (see the options of each format in docs/exports.md)")
    p.set_defaults(func=cmd_export)


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option takes KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


def cmd_export(args: argparse.Namespace) -> int:
    source = ExportSource.from_files(args.circuit, args.images)
    exported = run_export(args.format, source, parse_options(args.option))
    circuit_path = Path(args.circuit)
    out = Path(args.out) if args.out else circuit_path.with_name(f"{circuit_path.stem}-{args.format}")
    for name, data in sorted(exported.files.items()):
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for warning in exported.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.format}: {len(exported.files)} file(s) in {out}")
    return 0
