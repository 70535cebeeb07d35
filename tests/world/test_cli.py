"""``neurflow world ...`` through the product's command line."""

from __future__ import annotations

import json

import pytest

from neurflow import cli
from neurflow.cli import world as world_commands


def test_world_is_registered():
    assert world_commands in cli.COMMAND_MODULES
    assert "world" in cli.build_parser().format_help()


def test_generate_command(tmp_path, capsys):
    root = tmp_path / "w"
    code = cli.main(["world", "generate", str(root), "--per-class", "1", "--seed", "4", "--image-size", "48x40", "--quiet"])
    assert code == 0
    doc = json.loads((root / "world.json").read_text())
    assert doc["seed"] == 4 and doc["image_size"] == [48, 40]
    assert doc["splits"]["train"]["images"] == 8 and doc["splits"]["heldout"]["images"] == 8
    assert "16 images of 8 classes" in capsys.readouterr().out
    # a second run refuses to write over it: one error line, exit code 2
    assert cli.main(["world", "generate", str(root), "--quiet"]) == 2
    assert "already holds a world" in capsys.readouterr().err


def test_bad_image_size_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["world", "generate", str(tmp_path / "x"), "--image-size", "big"])
    assert exc.value.code == 2
