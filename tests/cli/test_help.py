"""Every option of every ``neurflow`` command says in its --help what it takes."""

from __future__ import annotations

import argparse

from neurflow.cli import build_parser


def _options(parser: argparse.ArgumentParser, path: list[str]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, [*path, name])
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path), "/".join(action.option_strings) or action.dest, action


def test_every_option_has_help():
    options = list(_options(build_parser(), []))
    assert len(options) > 50
    missing = [f"neurflow {command} {name}" for command, name, action in options if not (action.help or "").strip()]
    assert not missing, f"options without --help text: {missing}"


def test_commands_that_write_circuits_take_out_explicitly():
    parser = build_parser()
    for argv in (["run", "spec.json"], ["submit", "spec.json"], ["label", "circuit.json"]):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"neurflow {' '.join(argv)} ran without --out")
