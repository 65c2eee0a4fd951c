"""The layout table of docs/development.md says which package imports which; the source must agree, the layers
stack one way, importing a module has no effect beyond defining it, and only command-line entry points end the
process."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGES = (
    "toolkit", "inference", "models", "service", "batch", "training", "detection", "export", "report", "tests", "bench"
)  # fmt: skip
# Bottom to top: a package imports only from layers below its own. The torch-free core (inference, on the toolkit)
# carries the server, batch jobs and training; only tests and benchmarks import the server.
LAYERS = (
    ("toolkit",), ("inference", "models"), ("service", "batch", "training"), ("detection",), ("export",),
    ("report",), ("tests",), ("bench",)
)  # fmt: skip
ENTRY_MODULE = "service.service"  # the module bentofile.yaml names: it reads the environment and may exit
IMPORT_EACH = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported", len(sys.argv) - 1)
"""


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
    assert not actual["toolkit"] and not actual["models"]  # the standard-library toolkit and plain models
    assert actual["inference"] == actual["service"] - {"inference"} == {"toolkit"}  # the torch-free core and server
    assert {package for package in PACKAGES if "service" in actual[package]} == {"tests", "bench"}


def test_every_package_but_tests_and_benchmarks_is_installed() -> None:
    import tomllib

    found = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {name.rstrip("*") for name in found["include"]} == set(PACKAGES) - {"tests", "bench"}


def test_importing_a_module_reads_no_model_and_never_exits(tmp_path) -> None:
    # every module but the bentofile's entry, with the model setting naming a missing file: nothing may raise or exit
    modules = sorted(
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
    )
    modules = [module for module in modules if module != ENTRY_MODULE]
    env = {**os.environ, "RESNET_LAB_MODEL": str(tmp_path / "missing.onnx"), "RESNET_LAB_DETECTOR": "missing.onnx"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, *modules], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {len(modules)}" in result.stdout


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
    and outside the one entry-point wrapper, ``toolkit.cli.entry_point``."""
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
    entry_modules = {REPO_ROOT / Path(*ENTRY_MODULE.split(".")).with_suffix(".py")}
    found = {
        f"{path.relative_to(REPO_ROOT)}:{line}"
        for package in PACKAGES
        if package != "tests"
        for path in (REPO_ROOT / package).rglob("*.py")
        if path not in entry_modules
        for line in _exits(ast.parse(path.read_text()))
    }
    assert not found, sorted(found)
