"""The ``neurflow`` command line.

Each product area registers its own subcommands from its own module (``register(subparsers)``);
this module only assembles them, so teams can add commands without editing each other's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that contribute subcommands. Each defines ``register(subparsers) -> None`` and sets
#: ``func`` on its parsers; ``func(args) -> int`` is the exit code.
COMMAND_MODULES = [
    "core.cli",
    "labeler.pipeline",
    "core.world.cli",
    "labeler.service.cli",
    "labeler.label_cli",
    "labeler.exports.cli",
    "labeler.viewer.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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


if __name__ == "__main__":
    sys.exit(main())
