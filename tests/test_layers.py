"""The layers of the tree, checked: no import runs upward, none runs in a circle, and the installed
package list is whole.

Ranks go from the bottom (0) to the top. A module may import its own subpackage and any subpackage
of a strictly lower rank, never one of the same rank beside it or above it. Inside a layer, modules
import each other freely but never in a circle. Lazy imports inside functions and imports under
``TYPE_CHECKING`` count: a layer that needs something above it at run time is still tangled, and two
modules that need each other are one module in two files.
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
    # the HTTP client of the service: beside it, so it can never import the server's modules
    "neurflow.client": ("neurflow/client", 5),
    "neurflow.cli": ("neurflow/cli", 6),  # the command line: one root that every layer's commands register with
}

#: layers whose folder lies inside another layer's folder: installed through that folder's package-dir entry
NESTED = {name for name, (folder, _) in LAYERS.items() if "/" in folder}

#: third-party packages a layer must not import (the engine stays free of web, CLIP and VLM code)
FORBIDDEN_THIRD_PARTY = {
    "neurflow.core": {"litestar", "open_clip", "transformers", "httpx", "uvicorn"},
    "neurflow.prompts": {"torch", "litestar", "open_clip", "transformers"},
    "neurflow.labeler": {"litestar", "uvicorn"},
    "neurflow.exports": {"litestar", "uvicorn", "open_clip", "transformers"},
    "neurflow.atlas": {"litestar", "uvicorn", "open_clip", "transformers"},
    "neurflow.viewer": {"litestar", "uvicorn", "open_clip", "transformers"},
    "neurflow.client": {"litestar", "uvicorn", "torch", "open_clip", "transformers"},
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


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` statement names (relative ones resolved)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """Absolute names imported by a file (relative imports resolved against its module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path, module)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, package)
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
    planted.write_text("from neurflow.service.http.app import create_app\nfrom ..labeler import scoring\n")
    try:
        problems = import_violations()
    finally:
        planted.unlink()
    assert sum("_planted_upward_import" in p for p in problems) == 2


def modules_imported(path: Path, module: str, modules: set[str]) -> list[tuple[int, str]]:
    """The modules of the tree a file imports, each with its line: ``from pkg import mod`` imports the
    module ``pkg.mod``; ``from pkg.mod import name`` and ``import pkg.mod`` import ``pkg.mod``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path, module)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, package)
            names = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
            if len(names) < len(node.names):  # some names are not modules: they come from ``target`` itself
                names.append(target)
        else:
            continue
        for name in names:
            while name and name not in modules:  # ``a.b.Name`` -> ``a.b``
                name = name.rpartition(".")[0]
            if name and name != module:
                found.append((node.lineno, name))
    return found


def _components(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _circle(edges: dict[str, dict[str, int]], members: list[str]) -> list[str]:
    """One circle through the first module of a component (the shortest, found breadth first)."""
    start, inside = members[0], set(members)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in sorted(edges[node]):
            if other == start:
                return [*paths[node], start]
            if other in inside and other not in paths:
                paths[other] = [*paths[node], other]
                queue.append(other)
    raise AssertionError(f"no circle through {start}")


def import_circles() -> list[str]:
    """Every set of modules of one layer that import each other in a circle, with one circle spelled out."""
    files = {module_name(path): path for path in source_files()}
    edges: dict[str, dict[str, int]] = {module: {} for module in files}
    for module, path in files.items():
        for line, target in modules_imported(path, module, set(files)):
            if layer_of_module(target) == layer_of_module(module):
                edges[module].setdefault(target, line)
    problems = []
    for members in _components(edges):
        circle = _circle(edges, members)
        steps = " -> ".join(f"{a} ({files[a].relative_to(REPO)}:{edges[a][b]})" for a, b in zip(circle, circle[1:]))
        others = [m for m in members if m not in circle]
        problems.append(f"{layer_of_module(circle[0])}: {steps} -> {circle[0]}"
                        + (f" (and {', '.join(others)})" if others else ""))
    return problems


def test_no_import_circle_inside_a_layer():
    problems = import_circles()
    assert not problems, "modules that import each other in a circle:\n" + "\n".join(problems)


def test_circle_check_catches_a_lazy_circle():
    # The checker must be able to fail: plant two engine modules that need each other, one of them lazily.
    planted = [REPO / "core" / "_planted_circle_a.py", REPO / "core" / "_planted_circle_b.py"]
    planted[0].write_text("from neurflow.core import _planted_circle_b\n")
    planted[1].write_text("def later():\n    from ._planted_circle_a import x\n")
    try:
        problems = import_circles()
    finally:
        for path in planted:
            path.unlink()
    mine = [p for p in problems if "_planted_circle" in p]
    assert len(mine) == 1, problems
    assert mine[0].startswith("neurflow.core: ")
    assert "core/_planted_circle_a.py:1" in mine[0] and "core/_planted_circle_b.py:2" in mine[0]


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
    assert set(LAYERS) - NESTED == set(mapping)


if __name__ == "__main__":
    problems = import_violations() + import_circles()
    print("\n".join(problems) or "no upward imports, no circles")
    sys.exit(1 if problems else 0)
