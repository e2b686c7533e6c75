"""Layers point down (STYLE.md): the core package imports no room above it, and no room
imports one that imports it back.  Every import counts, also the ones inside functions:
a lazy import is still a dependency.

    command (captchalens/cli.py, cli_solve.py: `captchalens ...`, dispatches to every room)
      native_host  ->  training, converter, core
      training     ->  core
      converter    ->  core
      core (captchalens/*: contract, images, preprocess, decode, solver, paths, files, ...)
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the package name it is installed as (pyproject.toml's package-dir).
ROOMS = {"captchalens": "captchalens", "training": "captchalens.training",
         "converter": "captchalens.converter", "native_host": "captchalens.native_host"}
COMMAND = {"captchalens.cli", "captchalens.cli_solve"}  # above every room
# Which rooms each room may import (itself and the core always).
ALLOWED = {
    "core": set(),
    "training": set(),
    "converter": set(),
    "native_host": {"training", "converter"},
    "command": {"training", "converter", "native_host"},
}


def room_of(module: str) -> str | None:
    if module in COMMAND:
        return "command"
    for room in ("training", "converter", "native_host"):
        if module == f"captchalens.{room}" or module.startswith(f"captchalens.{room}."):
            return room
    if module == "captchalens" or module.startswith("captchalens."):
        return "core"
    return None  # not ours


def module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    parts = [*ROOMS[folder].split("."), *path.relative_to(ROOT / folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in a file, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from pkg import module`
    return out


def edges() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for folder in ROOMS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            src = room_of(module_name(path))
            for line, mod in imports(path):
                dst = room_of(mod)
                if dst and dst != src:
                    found.setdefault((src, dst), []).append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    return found


def test_every_import_between_rooms_points_down():
    wrong = [where for (src, dst), places in edges().items()
             if dst != "core" and dst not in ALLOWED[src] for where in places]
    assert not wrong, "imports that point up or sideways (tests/test_layers.py says which are allowed):\n" + \
        "\n".join(wrong)


def test_no_import_cycle_between_rooms():
    graph: dict[str, set[str]] = {}
    for src, dst in edges():
        graph.setdefault(src, set()).add(dst)

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert not cycles, f"rooms that import each other: {cycles}: {edges()}"


@pytest.mark.parametrize("source, expected", [
    ("from captchalens.converter import convert\n", "captchalens.converter"),
    ("def f():\n    from ..converter.core import convert\n", "captchalens.converter.core"),
])
def test_the_check_sees_module_level_and_lazy_imports(source, expected):
    """The checker itself: an import from training into the converter is found, lazy and relative too."""
    found = [m for _, m in imports(ROOT / "training" / "probe.py", source)]
    assert expected in found
    assert room_of(expected) == "converter" and "converter" not in ALLOWED["training"]
