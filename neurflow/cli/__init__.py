"""The ``neurflow`` command line: one root parser that every layer's commands register with.

Each module below defines ``register(subparsers)``, sets ``func(args) -> exit code`` on its parsers,
and imports its heavy dependencies (torch, open_clip, litestar) inside the commands, so ``--help`` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import sys

from neurflow import __version__
from neurflow.cli import atlas, audit, engine, experiments, exports, labels, service, viewer, world

#: In the order ``neurflow --help`` lists them.
COMMAND_MODULES = (engine, experiments, labels, world, service, exports, viewer, atlas, audit)

DESCRIPTION = (
    "Explain a vision model: find the circuit of neurons behind a class (NeurFlow), group its neurons "
    "into concepts, label the groups with CLIP, and serve, export or view the result."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurflow", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"neurflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        # Bad input is reported as one clear line, never as a traceback.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"neurflow {args.command}: error: {message}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
