"""The report of a backtest: the summary as text (what ``qt backtest`` prints) and as JSON, ``trades.csv``,
the equity and drawdown chart (``equity.png``) and one HTML file that opens offline (the chart inside it
as a data URI, no script, no link out).

matplotlib is imported here only, when the chart is drawn (the Agg backend: no display needed).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backtest.engine import RunResult
from backtest.metrics import Summary, TradeStats, drawdowns
from common.contracts import TradeClosed

#: the columns of trades.csv, in order
TRADE_COLUMNS = ("symbol", "side", "qty", "entry_time", "exit_time", "entry_price", "exit_price", "realized_pnl",
                 "fees", "pnl_net", "exit_reason", "hold_minutes", "opened_at_ms", "closed_at_ms", "position_plan_id")
#: the most trades the HTML report lists (all of them are in trades.csv)
HTML_TRADES_MAX = 1000


@dataclass(frozen=True)
class ReportFiles:
    summary_json: Path
    trades_csv: Path
    chart_png: Path
    report_html: Path


def iso(ms: int) -> str:
    """An epoch-ms time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def _num(x: float | None, places: int = 2) -> str:
    return "-" if x is None else f"{x:.{places}f}"


def _hold(ms: float | None) -> str:
    if ms is None:
        return "-"
    minutes = ms / 60_000
    return f"{minutes:.0f}m" if minutes < 120 else f"{minutes / 60:.1f}h"


def _usd(x: Any) -> str:
    return "-" if x is None else f"{float(x):,.2f}"


# --- text ----------------------------------------------------------------------------------------


def _stats_row(name: str, s: TradeStats) -> list[str]:
    return [name, str(s.trades), _pct(s.win_rate), _usd(s.net_pnl), _usd(s.fees),
            _num(s.profit_factor), _hold(s.average_hold_ms)]


_STATS_HEAD = ["", "trades", "win rate", "net PnL", "fees", "profit factor", "avg hold"]


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]


def headline(summary: Summary) -> list[tuple[str, str]]:
    """The summary's figures, named, in the order the text and the HTML show them."""
    o = summary.overall
    return [
        ("period", f"{iso(summary.start_ms)} → {iso(summary.end_ms)} ({summary.days} days)"),
        ("symbols", f"{', '.join(summary.symbols)} ({summary.interval}, {summary.klines} klines)"),
        ("trades", str(o.trades)),
        ("win rate", _pct(o.win_rate)),
        ("net PnL after fees", f"{_usd(o.net_pnl)} USDT (fees {_usd(o.fees)})"),
        ("return", f"{_pct(summary.total_return)} ({_usd(summary.starting_equity)} → {_usd(summary.final_equity)})"),
        ("max drawdown", f"{_pct(summary.max_drawdown)} ({_usd(summary.max_drawdown_usd)} USDT)"),
        ("Sharpe (daily, ×√365)", _num(summary.sharpe)),
        ("Sortino (daily, ×√365)", _num(summary.sortino)),
        ("profit factor", _num(o.profit_factor)),
        ("average hold", _hold(o.average_hold_ms)),
        ("exposure", f"{_pct(summary.exposure)} of the time with a position open"),
        ("open at the end", f"{summary.open_at_end} (unrealized {_usd(summary.unrealized_at_end)} USDT)"),
        ("kill switch", _trips(summary.kill_switch_trips)),
    ]


def _trips(trips: Sequence[dict[str, Any]]) -> str:
    """The kill switch's trips in a line: the first and the last (all of them are in summary.json)."""
    if not trips:
        return "never tripped"
    first = f"tripped {iso(trips[0]['at'])}: {trips[0]['reason']}"
    if len(trips) == 1:
        return first
    last = trips[-1]
    return f"{first}; {len(trips)} trips in all, the last {iso(last['at'])}: {last['reason']}"


def text(summary: Summary, result: RunResult) -> str:
    lines = ["backtest"]
    pairs = headline(summary)
    width = max(len(k) for k, _ in pairs)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in pairs]
    lines += ["", "by exit reason"]
    lines += ["  " + r for r in _table([_STATS_HEAD] + [_stats_row(k, v) for k, v in summary.by_exit_reason.items()])]
    lines += ["", "by symbol"]
    lines += ["  " + r for r in _table([_STATS_HEAD] + [_stats_row(k, v) for k, v in summary.by_symbol.items()])]
    stats = result.stats
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items(), key=lambda kv: -kv[1]))
    lines += ["", f"signals  {outcomes}"]
    if stats.refused:
        lines.append("refused  " + ", ".join(f"{k} {v}" for k, v in sorted(stats.refused.items())))
    lines.append("plans    " + ", ".join(f"{k} {v}" for k, v in sorted(stats.results.items())))
    return "\n".join(lines)


# --- files ---------------------------------------------------------------------------------------


def trade_rows(trades: Sequence[TradeClosed]) -> list[dict[str, str]]:
    return [{
        "symbol": t.symbol, "side": t.side.value, "qty": format(t.qty, "f"), "entry_time": iso(t.opened_at),
        "exit_time": iso(t.closed_at), "entry_price": format(t.entry_price, "f"),
        "exit_price": format(t.exit_price, "f"),
        "realized_pnl": format(t.realized_pnl, "f"), "fees": format(t.fees, "f"), "pnl_net": format(t.pnl_net, "f"),
        "exit_reason": t.exit_reason, "hold_minutes": f"{(t.closed_at - t.opened_at) / 60_000:.1f}",
        "opened_at_ms": str(t.opened_at), "closed_at_ms": str(t.closed_at), "position_plan_id": t.position_plan_id,
    } for t in trades]


def write_trades_csv(path: Path, trades: Sequence[TradeClosed]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=TRADE_COLUMNS)
        writer.writeheader()
        writer.writerows(trade_rows(trades))


def chart_png(result: RunResult, title: str = "") -> bytes:
    """The equity curve (marked to market) above its drawdown, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    times = [datetime.fromtimestamp(p.ts / 1000, tz=UTC) for p in result.equity]
    equity = [p.equity for p in result.equity]
    dd = [-100.0 * d for d in drawdowns(equity, float(result.starting_equity))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    try:
        top.plot(times, equity, color="#1f5fa8", linewidth=1.0)
        top.axhline(float(result.starting_equity), color="#999999", linewidth=0.7, linestyle="--")
        top.set_ylabel("equity (USDT)")
        top.set_title(title or "equity, marked to market")
        top.grid(alpha=0.3)
        bottom.fill_between(times, dd, 0.0, color="#c0392b", alpha=0.5, linewidth=0)
        bottom.set_ylabel("drawdown (%)")
        bottom.grid(alpha=0.3)
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]  # matplotlib's stubs leave it untyped
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def html_report(summary: Summary, result: RunResult, png: bytes, notes: dict[str, Any]) -> str:
    figures = _html_table(["", ""], headline(summary))
    reasons = _html_table(_STATS_HEAD, [_stats_row(k, v) for k, v in summary.by_exit_reason.items()])
    symbols = _html_table(_STATS_HEAD, [_stats_row(k, v) for k, v in summary.by_symbol.items()])
    rows = trade_rows(result.trades[:HTML_TRADES_MAX])
    trades = _html_table(TRADE_COLUMNS[:12], [[r[c] for c in TRADE_COLUMNS[:12]] for r in rows])
    more = (f"<p>The first {HTML_TRADES_MAX} of {len(result.trades)} trades; all of them are in trades.csv.</p>"
            if len(result.trades) > HTML_TRADES_MAX else "")
    stats = result.stats
    runs = _html_table(["", ""], [
        ["signals", ", ".join(f"{k} {v}" for k, v in sorted(stats.outcomes.items()))],
        ["intents refused", ", ".join(f"{k} {v}" for k, v in sorted(stats.refused.items())) or "none"],
        ["plans", ", ".join(f"{k} {v}" for k, v in sorted(stats.results.items()))],
        ["path points", f"{stats.path_points} ({stats.evaluated} evaluated, the rest provably quiet)"],
        *[[str(k), str(v)] for k, v in notes.items()],
    ])
    image = base64.b64encode(png).decode("ascii")
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}"
             "td:first-child,th:first-child{text-align:left}h1{font-size:1.4em}h2{font-size:1.1em}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>backtest report</title>"
        f"<style>{style}</style></head><body>"
        f"<h1>Backtest: {html.escape(', '.join(summary.symbols))}</h1>{figures}"
        f"<img alt=\"equity and drawdown\" src=\"data:image/png;base64,{image}\">"
        f"<h2>By exit reason</h2>{reasons}<h2>By symbol</h2>{symbols}<h2>The run</h2>{runs}"
        f"<h2>Trades</h2>{more}{trades}</body></html>\n"
    )


def summary_document(summary: Summary, result: RunResult, notes: dict[str, Any]) -> dict[str, Any]:
    """What ``--json`` prints and ``summary.json`` holds."""
    stats = result.stats
    return {
        "summary": summary.to_dict(),
        "run": {"klines": stats.klines, "path_points": stats.path_points, "evaluated": stats.evaluated,
                "signals": stats.outcomes, "refused": {str(k): v for k, v in stats.refused.items()},
                "plans": stats.results, "proposals": stats.proposals, "proposals_ignored": stats.proposals_ignored,
                "fills": stats.fills, "orphan_fills": stats.orphan_fills,
                "protection_failures": stats.protection_failures, "model_fallbacks": stats.model_fallbacks},
        "open_at_end": [{"symbol": p.symbol, "side": p.side, "qty": format(p.qty, "f"),
                         "entry_price": format(p.entry_price, "f"), "mark": format(p.mark, "f"),
                         "unrealized_pnl": format(p.unrealized_pnl, "f"), "opened_at": p.opened_at}
                        for p in result.open_at_end],
        "notes": {k: str(v) for k, v in notes.items()},
    }


def write(out: Path, summary: Summary, result: RunResult, notes: dict[str, Any] | None = None) -> ReportFiles:
    """Every file of the report into ``out`` (created when missing)."""
    notes = dict(notes or {})
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "summary.json", out / "trades.csv", out / "equity.png", out / "report.html")
    files.summary_json.write_text(json.dumps(summary_document(summary, result, notes), indent=2) + "\n",
                                  encoding="utf-8")
    write_trades_csv(files.trades_csv, result.trades)
    png = chart_png(result, f"{', '.join(summary.symbols)} ({summary.interval})")
    files.chart_png.write_bytes(png)
    files.report_html.write_text(html_report(summary, result, png, notes), encoding="utf-8")
    return files
