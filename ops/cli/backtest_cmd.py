"""``qt backtest``: the fleet's own decision code over kline files, on a simulated clock, without Redis
(:mod:`backtest`), and its report."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from common.config import REPO_ROOT, ConfigurationError, Settings, exit_config_error, load_settings
from common.kline_files import KlineFileError, load_kline_files
from common.klines import Kline

EX_DATAERR = 65
DEFAULT_OUT = REPO_ROOT / "var" / "backtest"


def parse_date(text: str, option: str) -> int:
    """``2024-01-31`` or ``2024-01-31T12:00[:00][Z]`` (UTC) as epoch ms."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not a date: {text!r} (YYYY-MM-DD or YYYY-MM-DDTHH:MM)", param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def select(klines: dict[str, list[Kline]], symbols: Sequence[str], start_ms: int | None,
           end_ms: int | None) -> dict[str, list[Kline]]:
    """The symbols asked for (all when none), the klines opened in ``[start_ms, end_ms)``."""
    missing = [s for s in symbols if s not in klines]
    if missing:
        raise KlineFileError(", ".join(missing), 0, f"no klines of {', '.join(missing)} in the files given "
                                                    f"(they hold {', '.join(klines) or 'none'})")
    chosen = {s: klines[s] for s in (symbols or list(klines))}
    return {s: [k for k in series if (start_ms is None or k.open_time >= start_ms)
                and (end_ms is None or k.open_time < end_ms)] for s, series in chosen.items()}


def _settings(config: Path | None, **overrides: Any) -> Settings:
    """The fleet's settings, with ``config`` applied over ``config/default.toml`` (as ``QT_CONFIG``)."""
    if config is not None:
        if not config.is_file():
            exit_config_error("qt backtest", ConfigurationError("--config", f"no such file: {config}"))
        os.environ["QT_CONFIG"] = str(config)
    try:
        return load_settings(**overrides)
    except ConfigurationError as e:
        exit_config_error("qt backtest", e)


def backtest(
    data: list[Path] = typer.Option(..., "--data", help="Kline files (JSON, CSV, Binance zips) or directories."),
    more: list[Path] = typer.Argument(None, metavar="[FILE]...", help="More kline files (after --data FILE)."),
    symbols: str = typer.Option("", help="Only these symbols (comma-separated); all the files hold by default."),
    start: str = typer.Option("", "--from", help="First kline (open time, UTC date or datetime)."),
    end: str = typer.Option("", "--to", help="End (exclusive): klines opened before it."),
    config: Path | None = typer.Option(None, "--config", help="A settings file over config/default.toml."),
    out: Path | None = typer.Option(None, "--out", help="Report directory (default var/backtest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (for scripts)."),
    walk_forward: int = typer.Option(0, "--walk-forward", min=0, metavar="N",
                                     help="Train on each of N+1 windows and test on the next (N folds)."),
    model: Path | None = typer.Option(None, "--model", help="A trained model (its .json, or a model directory)."),
    force: bool = typer.Option(False, "--force", help="Walk-forward: trade a model that does not beat the baseline."),
    horizon: int = typer.Option(5, min=1, max=500, help="Walk-forward: the model's label horizon (klines)."),
    rearm_next_day: bool = typer.Option(False, "--rearm-next-day",
                                        help="Re-arm a tripped kill switch each new UTC day (an operator's reset)."),
    exact: bool = typer.Option(False, "--exact", help="Run every decision at every path point (no fast path)."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                         help="A progress bar on stderr (default: when stderr is a terminal)."),
) -> None:
    """Backtest the fleet's own decisions (signal, bridge, gates, paper fills, exits, ladder, books) over
    kline files, and write the report: summary.json, trades.csv, equity.png, report.html."""
    # imported here: the other qt commands do not need the engine (nor numpy)
    from backtest import metrics, report
    from backtest.config import BacktestConfig, load_model
    from backtest.engine import run
    from backtest.progress import ProgressBar

    wanted = [s.strip() for s in symbols.split(",") if s.strip()]
    start_ms = parse_date(start, "--from") if start else None
    end_ms = parse_date(end, "--to") if end else None
    paths = [*data, *(more or [])]
    try:
        try:
            loaded = load_kline_files(paths)
        except KlineFileError as e:
            if len(wanted) != 1 or "symbol" not in e.problem:
                raise
            loaded = load_kline_files(paths, symbol=wanted[0])  # a file whose name does not say its symbol
        klines = {s: k for s, k in select(loaded, wanted, start_ms, end_ms).items() if k}
        if not klines:
            raise KlineFileError(", ".join(map(str, paths)), 0, "no klines in the period asked for")
    except KlineFileError as e:
        typer.echo(f"qt backtest: {e}", err=True)
        raise SystemExit(EX_DATAERR) from None
    settings = _settings(config, symbols=tuple(klines))
    trained = None
    if model is not None:
        try:
            trained = load_model(model)
        except ValueError as e:
            typer.echo(f"qt backtest: {e}", err=True)
            raise SystemExit(EX_DATAERR) from None
    try:
        conf = BacktestConfig.from_settings(settings, model=trained, fast=not exact, rearm_next_day=rearm_next_day,
                                            notes={"data": ", ".join(map(str, paths)),
                                                   "model": str(model) if model else "fallback-trend-following",
                                                   "config": str(config) if config else "config/default.toml"})
    except ConfigurationError as e:
        exit_config_error("qt backtest", e)
    bar = ProgressBar() if (progress if progress is not None else sys.stderr.isatty()) else None
    directory = out if out is not None else DEFAULT_OUT
    try:
        if walk_forward:
            _walk(klines, conf, walk_forward, directory, as_json, bar, horizon=horizon, force=force)
            return
        result = run(klines, conf, bar)
    except ConfigurationError as e:
        exit_config_error("qt backtest", e)
    except ValueError as e:
        typer.echo(f"qt backtest: {e}", err=True)
        raise SystemExit(EX_DATAERR) from None
    finally:
        if bar is not None:
            bar.close()
    summary = metrics.summarize(result)
    files = report.write(directory, summary, result, conf.notes)
    if as_json:
        document = report.summary_document(summary, result, conf.notes)
        document["files"] = {k: str(v) for k, v in vars(files).items()}
        typer.echo(json.dumps(document, indent=2))
        return
    typer.echo(report.text(summary, result))
    typer.echo(f"\nreport   {files.report_html}\ntrades   {files.trades_csv}\nchart    {files.chart_png}\n"
               f"summary  {files.summary_json}")


def _walk(klines: dict[str, list[Kline]], conf: Any, folds: int, directory: Path, as_json: bool, bar: Any, *,
          horizon: int, force: bool) -> None:
    from backtest import report
    from backtest.walk_forward import walk

    done = walk(klines, conf, folds, horizon=horizon, force=force, progress=bar)
    rows = [f.describe() for f in done]
    for f in done:
        report.write(directory / f"fold-{f.index}", f.summary, f.result, {**conf.notes, "used": f.used})
    (directory / "walk_forward.json").write_text(json.dumps({"folds": rows}, indent=2) + "\n", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps({"folds": rows, "report": str(directory)}, indent=2))
        return
    typer.echo(f"walk-forward: {folds} folds (train on window k, test on window k+1)")
    head = ["fold", "train", "test", "accuracy", "baseline", "used", "trades", "win rate", "net PnL", "return"]
    table = [head] + [[
        str(r["fold"]), f"{report.iso(r['train_start'])[:10]}..{report.iso(r['train_end'])[:10]}",
        f"{report.iso(r['test_start'])[:10]}..{report.iso(r['test_end'])[:10]}",
        "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
        "-" if r["baseline_accuracy"] is None else f"{r['baseline_accuracy']:.4f}", str(r["used"])[:24],
        str(r["trades"]), "-" if r["win_rate"] is None else f"{r['win_rate'] * 100:.1f}%", r["net_pnl"],
        f"{r['return'] * 100:.2f}%"] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    typer.echo(f"\nreports  {directory}/fold-<k>/report.html\nsummary  {directory / 'walk_forward.json'}")
