"""The layout table of docs/development.md says which package imports which; the source must agree, the layers
stack one way, and only command-line entry points end the process."""

from __future__ import annotations

import ast
import re

from tests.helpers import REPO_ROOT

PACKAGES = ("models", "training", "detection", "export", "report", "service", "tests", "bench")
# Bottom to top: a package imports only from layers below its own (models and service stand alone).
LAYERS = (("models", "service"), ("training",), ("detection",), ("export",), ("report",), ("tests",), ("bench",))


def imported_packages(package: str) -> set[str]:
    """The project's other top-level packages that ``package``'s modules import (eagerly or inside functions)."""
    found = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found - {package}


def documented_imports() -> dict[str, set[str]]:
    """Each package row of the layout table -> the packages its "imports" column names."""
    layout = (REPO_ROOT / "docs" / "development.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in layout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        folder = re.fullmatch(r"`(\w+)/`", cells[0]) if len(cells) == 3 else None
        if folder and folder.group(1) in PACKAGES:
            rows[folder.group(1)] = set(re.findall(r"`(\w+)`", cells[2])) & set(PACKAGES)
    return rows


def test_readme_layout_table_matches_the_imports() -> None:
    documented = documented_imports()
    assert set(documented) == set(PACKAGES)
    actual = {package: imported_packages(package) for package in PACKAGES}
    assert documented == actual
    assert not actual["service"] and not actual["models"]  # the torch-free service and plain models stand alone


def test_no_package_imports_from_its_own_or_a_higher_layer() -> None:
    level = {package: index for index, layer in enumerate(LAYERS) for package in layer}
    assert set(level) == set(PACKAGES)
    upward = {
        (package, imported)
        for package in PACKAGES
        for imported in imported_packages(package)
        if level[imported] >= level[package]
    }
    assert not upward


def _exits(tree: ast.AST) -> list[int]:
    """Lines that end the process (``raise SystemExit``, ``sys.exit``) outside ``if __name__ == "__main__":`` blocks
    and outside the one entry-point wrapper, ``training.cli.entry_point``."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        main_block = isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
        if main_block or (isinstance(node, ast.FunctionDef) and node.name == "entry_point"):
            allowed |= {child.lineno for child in ast.walk(node) if hasattr(child, "lineno")}
    found = []
    for node in ast.walk(tree):
        exits = isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc)
        exits |= isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.exit"
        if exits and node.lineno not in allowed:
            found.append(node.lineno)
    return found


def test_only_command_line_entry_points_end_the_process() -> None:
    # service/service.py is the entry of `bentoml serve`: a model it cannot load stops the server at import
    entry_modules = {REPO_ROOT / "service" / "service.py"}
    found = {
        f"{path.relative_to(REPO_ROOT)}:{line}"
        for package in PACKAGES
        if package != "tests"
        for path in (REPO_ROOT / package).rglob("*.py")
        if path not in entry_modules
        for line in _exits(ast.parse(path.read_text()))
    }
    assert not found, sorted(found)
