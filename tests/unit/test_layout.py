"""The import direction of the tree: ``common/`` is what services share and imports neither ``ops/`` nor
``services/``; no service imports another; ``ops/`` (operator tooling) is imported by no service."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imports(package: str) -> Iterator[tuple[Path, str]]:
    """(file, imported module) for every import in ``package``'s Python files."""
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_common_imports_neither_ops_nor_services() -> None:
    """``common/`` is the bottom of the tree."""
    wrong = [(str(p.relative_to(REPO)), m) for p, m in imports("common") if _top(m) in ("ops", "services")]
    assert wrong == []


def test_no_service_imports_another_or_ops() -> None:
    """A service shares code with another only through ``common/``, never by importing it."""
    wrong = []
    for path, module in imports("services"):
        own = path.relative_to(REPO / "services").parts[0]
        parts = module.split(".")
        if parts[0] == "ops" or (parts[0] == "services" and len(parts) > 1 and parts[1] != own):
            wrong.append((str(path.relative_to(REPO)), module))
    assert wrong == []
