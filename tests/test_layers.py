"""The layers of the tree, checked: no import runs upward, and the installed package list is whole.

Ranks go from the bottom (0) to the top. A module may import its own subpackage and any subpackage
of a strictly lower rank, never one of the same rank beside it or above it. Lazy imports inside
functions count: a layer that needs something above it at run time is still tangled.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: installed subpackage -> (folder in the repo, rank)
LAYERS: dict[str, tuple[str, int]] = {
    "neurflow": ("neurflow", 0),  # version and the few helpers every layer shares
    "neurflow.core": ("core", 1),
    "neurflow.prompts": ("prompts", 1),
    "neurflow.labeler": ("labeler", 2),
    "neurflow.exports": ("exports", 3),
    "neurflow.atlas": ("atlas", 3),  # the concept atlas: consumes circuits (core, labeler), beside exports
    "neurflow.viewer": ("viewer", 4),
    "neurflow.world": ("world", 4),
    "neurflow.service": ("service", 5),
    "neurflow.cli": ("neurflow/cli", 6),  # the command line: one root that every layer's commands register with
}

#: third-party packages a layer must not import (the engine stays free of web, CLIP and VLM code)
FORBIDDEN_THIRD_PARTY = {
    "neurflow.core": {"litestar", "open_clip", "transformers", "httpx", "uvicorn"},
    "neurflow.prompts": {"torch", "litestar", "open_clip", "transformers"},
    "neurflow.labeler": {"litestar", "uvicorn"},
    "neurflow.exports": {"litestar", "uvicorn", "open_clip", "transformers"},
    "neurflow.atlas": {"litestar", "uvicorn", "open_clip", "transformers"},
    "neurflow.viewer": {"litestar", "uvicorn", "open_clip", "transformers"},
}

#: names that must never be imported from installed code (they are not installed)
NOT_INSTALLED = {"core", "labeler", "prompts", "exports", "atlas", "viewer", "world", "service", "bench", "demo", "tests"}


def layer_of_module(module: str) -> str:
    """The layer a dotted ``neurflow...`` module name belongs to (longest matching prefix)."""
    best = "neurflow"
    for name in LAYERS:
        if (module == name or module.startswith(name + ".")) and len(name) > len(best):
            best = name
    return best


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    # the deepest folder wins: neurflow/cli/ belongs to neurflow.cli, not to neurflow
    for name, (folder, _) in sorted(LAYERS.items(), key=lambda item: -len(Path(item[1][0]).parts)):
        if rel.parts[: len(Path(folder).parts)] == Path(folder).parts:
            tail = rel.parts[len(Path(folder).parts):]
            parts = [*name.split("."), *tail]
            parts[-1] = parts[-1].removesuffix(".py")
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    raise AssertionError(f"{rel} belongs to no layer")


def source_files() -> list[Path]:
    files: set[Path] = set()
    for folder, _ in LAYERS.values():
        files.update((REPO / folder).rglob("*.py"))
    return sorted(files)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """Absolute names imported by a file (relative imports resolved against its module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from neurflow import cli`` imports the submodule ``neurflow.cli``
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names
                         if f"{target}.{alias.name}" in LAYERS)
    return found


def import_violations() -> list[str]:
    problems = []
    for path in source_files():
        module = module_name(path)
        layer = layer_of_module(module)
        rank = LAYERS[layer][1]
        for line, target in imports_of(path, module):
            where = f"{path.relative_to(REPO)}:{line}"
            top = target.split(".")[0]
            if top in NOT_INSTALLED:
                problems.append(f"{where}: imports {target!r}, which is not an installed name")
            elif top in FORBIDDEN_THIRD_PARTY.get(layer, ()):
                problems.append(f"{where}: {layer} must not import {top}")
            elif top == "neurflow":
                other = layer_of_module(target)
                if other != layer and LAYERS[other][1] >= rank:
                    problems.append(f"{where}: {layer} (rank {rank}) imports {target} "
                                    f"({other}, rank {LAYERS[other][1]})")
    return problems


def test_no_import_runs_upward():
    problems = import_violations()
    assert not problems, "imports that run upward or sideways:\n" + "\n".join(problems)


def test_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    # The checker itself must be able to fail: plant an engine module that imports the service.
    planted = REPO / "core" / "_planted_upward_import.py"
    planted.write_text("from neurflow.service.app import create_app\nfrom ..labeler import scoring\n")
    try:
        problems = import_violations()
    finally:
        planted.unlink()
    assert sum("_planted_upward_import" in p for p in problems) == 2


def test_bench_demo_and_tests_use_installed_names_only():
    problems = []
    for folder in ("bench", "demo", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module
                         else [])
                for name in names:
                    if name.split(".")[0] in NOT_INSTALLED - {"bench", "demo", "tests"}:
                        problems.append(f"{path.relative_to(REPO)}:{node.lineno}: import {name}")
    assert not problems, "\n".join(problems)


def test_package_list_matches_the_folders():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    mapping = config["package-dir"]
    on_disk = set()
    for name, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            on_disk.add(".".join([name, *rel.parts]))
    assert declared == on_disk
    assert set(LAYERS) - {"neurflow.cli"} == set(mapping)


if __name__ == "__main__":
    problems = import_violations()
    print("\n".join(problems) or "no upward imports")
    sys.exit(1 if problems else 0)
