"""``qt backtest`` as an operator runs it: generated kline files and a settings file for them in, the report
printed and its files written; ``--json`` for scripts; ``--walk-forward``; bad input answered with exit 65."""

from __future__ import annotations

import json
from pathlib import Path

from backtest import synthetic
from tests.integration.cli.qt import qt

#: no Redis is needed: a URL nothing listens on proves it
NO_REDIS = "redis://127.0.0.1:9/0"


def files(tmp_path: Path, symbols: int = 2, klines: int = 1500) -> tuple[list[str], str]:
    data = synthetic.market(symbols, klines, seed=3)
    paths = synthetic.write_klines(tmp_path / "data", data)
    settings = synthetic.write_config(tmp_path / "config", list(data))
    return [str(p) for p in paths], str(settings)


def test_the_report_is_printed_and_written(tmp_path: Path) -> None:
    paths, settings = files(tmp_path)
    out = tmp_path / "report"
    done = qt(NO_REDIS, "backtest", "--data", *paths, "--config", settings, "--out", str(out), "--no-progress",
              timeout_s=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for heading in ("trades", "win rate", "net PnL after fees", "max drawdown", "by exit reason", "by symbol"):
        assert heading in done.stdout
    assert {p.name for p in out.iterdir()} == {"summary.json", "trades.csv", "equity.png", "report.html"}


def test_json_and_a_period(tmp_path: Path) -> None:
    """--json prints one JSON document; --from/--to keep the klines opened in [from, to)."""
    paths, settings = files(tmp_path)
    done = qt(NO_REDIS, "backtest", "--data", paths[0], "--config", settings, "--out", str(tmp_path / "r"),
              "--from", "2024-01-02", "--to", "2024-01-04T12:00", "--json", "--no-progress", timeout_s=120)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    summary = document["summary"]
    assert summary["start_ms"] == 1_704_153_600_000  # 2024-01-02T00:00Z
    assert summary["end_ms"] == 1_704_369_600_000  # 2024-01-04T12:00Z
    assert summary["klines"] == 2.5 * 288
    assert Path(document["files"]["report_html"]).is_file()


def test_walk_forward_reports_each_fold(tmp_path: Path) -> None:
    paths, settings = files(tmp_path, symbols=1, klines=3000)
    done = qt(NO_REDIS, "backtest", "--data", *paths, "--config", settings, "--out", str(tmp_path / "wf"),
              "--walk-forward", "2", "--json", "--no-progress", timeout_s=180)
    assert done.returncode == 0, done.stderr
    folds = json.loads(done.stdout)["folds"]
    assert [f["fold"] for f in folds] == [0, 1]
    assert all(f["train_end"] == f["test_start"] for f in folds)
    assert (tmp_path / "wf" / "fold-1" / "report.html").is_file()


def test_a_bad_file_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "XRP_USDT_USDT-5m-futures.json"
    bad.write_text('[[1636934400000, 1.1, 1.0, 1.2, 1.1, 5]]', encoding="utf-8")  # high below the open
    done = qt(NO_REDIS, "backtest", "--data", str(bad), "--out", str(tmp_path / "r"), "--no-progress")
    assert done.returncode == 65
    assert "qt backtest:" in done.stderr and str(bad) in done.stderr
