"""The rows of ``make bench`` that run the fleet as real processes, in one call: stop crossings (10 and 580
symbols), the 580-kline burst and exits under the order cap, marketdata on the all-market streams,
intent_bridge's restart, and memory. Each module also runs alone (``python -m bench.latency`` …).

``python -m bench.fleet_rows [--json PATH]`` prints them as they are measured (with their details)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import burst, latency, marketdata_ws, memory, restart
from bench.fleet import OnRow, show
from bench.report import Row, header, write


def measure(workdir: Path, on_row: OnRow | None = None) -> list[Row]:
    """Every fleet row, each module on Redis servers and fleets of its own under ``workdir``."""
    rows: list[Row] = []
    rows += latency.measure(workdir / "latency", on_row=on_row)
    rows += burst.measure(workdir / "burst", on_row=on_row)
    rows += marketdata_ws.measure(workdir / "marketdata", on_row=on_row)
    rows += restart.measure(workdir / "restart", on_row=on_row)
    rows += memory.measure(workdir / "memory", on_row=on_row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_rows", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the rows there (bench/results.json's shape)")
    args = parser.parse_args(argv)
    print(header(), flush=True)
    with tempfile.TemporaryDirectory(prefix="qt-bench-") as tmp:
        rows = measure(Path(tmp), on_row=show)
    if args.json:
        write(rows, args.json)


if __name__ == "__main__":
    main(sys.argv[1:])
