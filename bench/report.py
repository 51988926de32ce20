"""The rows of ``make bench``: each figure beside its reference measured in the same run, the ratio, the
goal; printed as a table and written to ``bench/results.json``."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass
class Row:
    """One figure. ``ratio`` is figure / reference (a share of the floor for throughputs, a multiple of
    the reference for latencies); ``met`` is None where the row has no goal of its own."""

    key: str
    figure: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    goal: str = ""
    met: bool | None = None
    details: dict[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.reference_value is None or not self.reference_value:
            return None
        return self.value / self.reference_value


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_row(row: Row) -> str:
    ref = f"{_num(row.reference_value)} {row.reference}" if row.reference_value is not None else row.reference
    ratio = "" if row.ratio is None else (f"{row.ratio:.0%}" if "/s" in row.unit else f"{row.ratio:.1f}x")
    met = {True: "yes", False: "NO", None: "-"}[row.met]
    return f"{row.figure:<58} {_num(row.value):>10} {row.unit:<9} {ref:<34} {ratio:>6}  {row.goal:<22} {met}"


def header() -> str:
    return (f"{'figure':<58} {'value':>10} {'unit':<9} {'reference (same run)':<34} {'ratio':>6}  "
            f"{'goal':<22} met")


def write(rows: list[Row], path: Path = RESULTS) -> None:
    """``bench/results.json``: every row with its figures and when it was measured (machine-dependent: not
    committed). A run of some groups replaces their rows and keeps the others' latest."""
    at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    kept: list[dict[str, object]] = []
    fresh = {row.key for row in rows}
    if path.exists():
        try:
            kept = [r for r in json.loads(path.read_text()).get("rows", []) if r.get("key") not in fresh]
        except (ValueError, AttributeError):
            kept = []
    data = {
        "at": at,
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()},
        "rows": kept + [{**asdict(row), "ratio": row.ratio, "at": at} for row in rows],
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
