"""The README's layout table says which package imports which; the source must agree."""

from __future__ import annotations

import ast
import re

from tests.helpers import REPO_ROOT

PACKAGES = ("models", "training", "detection", "export", "report", "service")


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
    """Each package row of the README's layout table -> the packages its "imports" column names."""
    layout = (REPO_ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
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
