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


#: the modules that decide (DESIGN §1.7): plain functions and values over values, run by the services and,
#: without Redis, by a replay of history
DECISIONS = (
    "common/maths", "common/contracts", "common/exit_levels.py", "common/positions.py", "common/policy.py",
    "common/market.py", "common/ess.py", "common/books.py", "common/klines.py", "common/ids.py",
    "services/apply_layer/gates.py", "services/apply_layer/book.py", "services/exitbrain/decide.py",
    "services/exitbrain/plans.py", "services/exitbrain/exit_state.py", "services/harvest_proposal/propose.py",
    "services/intent_bridge/bridge.py", "services/trading_bot/signals.py", "services/trading_bot/intents.py",
    "services/governor/risk.py", "services/position_monitor/reconcile.py", "services/harvest_brain/booking.py",
    "services/marketdata/replay.py", "services/marketdata/state.py",
    # the backtest runs the decisions above on a simulated clock: it reaches no I/O either
    "backtest",
)
#: what a decision must not reach, even through the project modules it imports
IO = frozenset({"redis", "aiohttp", "httpx", "fastapi", "uvicorn", "binance", "websockets", "prometheus_client",
                "asyncio"})


def _module_file(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _reach(path: Path) -> set[str]:
    """Every third-party or standard module ``path`` imports, through the project's own modules."""
    seen: set[Path] = set()
    outside: set[str] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        tree = ast.parse(current.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [])
            for name in names:
                if _top(name) in ("common", "services", "ops"):
                    found = _module_file(name)
                    if found is not None:
                        todo.append(found)
                else:
                    outside.add(_top(name))
    return outside


def test_decision_code_imports_no_io() -> None:
    """The deciding modules reach no Redis, HTTP, websocket, exchange client or event loop, however
    indirectly: the backtest runs them on a simulated clock without any of it."""
    files = [f for d in DECISIONS for f in ((REPO / d).rglob("*.py") if (REPO / d).is_dir() else [REPO / d])]
    wrong = {str(f.relative_to(REPO)): sorted(_reach(f) & IO) for f in files}
    assert {f: io for f, io in wrong.items() if io} == {}


def test_every_metric_of_the_fleet_is_named_qt() -> None:
    """Every metric a module of the fleet registers starts with ``qt_`` (the client library's own
    ``python_*`` and ``process_*`` aside), so a dashboard finds them all under one prefix."""
    import importlib

    from prometheus_client import REGISTRY

    for path in sorted((REPO / "services").rglob("*.py")) + sorted((REPO / "common").rglob("*.py")):
        if path.name != "__main__.py":
            importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"))
    names = {metric.name for metric in REGISTRY.collect()}
    ours = {n for n in names if not n.startswith(("python_", "process_"))}
    assert ours and {n for n in ours if not n.startswith("qt_")} == set()
