"""The clinic's feature folders form a stack: each imports only from the folders below it.

Read from the source with ``ast`` (every import, function-local ones included), so the rule
holds whether or not a module is ever imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clinic

SRC = Path(clinic.__file__).parent

LAYERS = [
    "core",
    "web",
    "accounts",
    "audit",
    "scheduling",
    "appointments",
    "notify",
    "visits",
]
"""The folders from the ground up. ``core`` and ``web`` are the ground; a folder may import
from itself and from any folder before it in this list, never from one after it."""

ROOT_FOLDERS = {"migrations", "data"}
"""Folders that are no layer: they sit with the modules at the top of the package (app.py,
cli.py, ...), which compose the features and may import any of them."""


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    package = ".".join(("clinic", *path.relative_to(SRC).with_suffix("").parts[:-1]))
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # ``from clinic import audit`` imports the module clinic.audit
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            out.append((node.lineno, base))
    return out


def folder_of(module: str) -> str | None:
    """The clinic folder a module lives in (None: not clinic, or a top-level module)."""
    parts = module.split(".")
    if parts[0] != "clinic" or len(parts) < 2:
        return None
    return parts[1] if (SRC / parts[1]).is_dir() else "<top>"


def back_imports(layers: list[str]) -> list[str]:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        here = path.relative_to(SRC).parts[0]
        if here not in layers:
            continue
        for line, module in imported_modules(path):
            there = folder_of(module)
            if there is None or there == here:
                continue
            if there not in layers or layers.index(there) > layers.index(here):
                problems.append(
                    f"{path.relative_to(SRC)}:{line} imports {module} ({here} -> {there})"
                )
    return sorted(set(problems))


def test_every_folder_has_a_place_in_the_stack() -> None:
    folders = {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders - ROOT_FOLDERS == set(LAYERS)


def test_feature_folders_import_only_from_below() -> None:
    problems = back_imports(LAYERS)
    assert not problems, "imports from a folder above:\n" + "\n".join(problems)


def test_the_check_sees_a_back_import() -> None:
    """The check is not vacuous: with appointments listed below scheduling, booking's use of
    scheduling's slot check shows up as a back-import."""
    swapped = [x for x in LAYERS if x != "appointments"]
    swapped.insert(swapped.index("scheduling"), "appointments")
    problems = back_imports(swapped)
    assert any("appointments -> scheduling" in p for p in problems)
