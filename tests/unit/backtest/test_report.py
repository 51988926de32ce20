"""The report's files exist and are well-formed: a PNG (signature and IHDR chunk), an HTML page that parses
with the image inside it and nothing fetched from outside, trades.csv with its columns and one row per
trade, summary.json with the figures; and the figures follow their definitions."""

from __future__ import annotations

import base64
import csv
import json
import struct
import zlib
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

from backtest import metrics, report, synthetic
from backtest.engine import EquityPoint, run
from common.policy import Limits
from tests.unit.backtest.support import config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects the tags, the images' sources and anything that would load from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.outside: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if tag == "img" and name == "src" and value:
                self.images.append(value)
            if name in ("src", "href") and value and value.startswith(("http:", "https:", "//")):
                self.outside.append(value)
        if tag in ("script", "link"):
            self.outside.append(tag)


def check_png(data: bytes) -> tuple[int, int]:
    """The width and height of a PNG whose signature and IHDR chunk (with its CRC) are right."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(kind + body) == crc
    width, height = struct.unpack(">II", body[:8])
    assert data.endswith(b"IEND\xaeB`\x82")
    return width, height


def test_the_files_exist_and_are_well_formed(tmp_path: Path) -> None:
    data = synthetic.market(2, 2000, seed=4)
    result = run(data, config(data, limits=Limits(daily_loss_limit_pct=Decimal(100), max_drawdown_pct=Decimal(100))))
    summary = metrics.summarize(result)
    files = report.write(tmp_path / "out", summary, result, {"data": "generated"})

    width, height = check_png(files.chart_png.read_bytes())
    assert width >= 600 and height >= 300

    page = Page()
    page.feed(files.report_html.read_text(encoding="utf-8"))
    page.close()
    assert {"html", "table", "img"} <= set(page.tags)
    assert page.outside == [], "the page opens offline"
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(page.images[0].split(",", 1)[1]) == files.chart_png.read_bytes()

    with files.trades_csv.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == report.TRADE_COLUMNS
    assert len(rows) == len(result.trades) > 0
    assert [Decimal(r["pnl_net"]) for r in rows] == [t.pnl_net for t in result.trades]

    document = json.loads(files.summary_json.read_text(encoding="utf-8"))
    assert document["summary"]["overall"]["trades"] == len(result.trades)
    assert Decimal(document["summary"]["overall"]["net_pnl"]) == sum((t.pnl_net for t in result.trades), Decimal(0))
    assert set(document["summary"]["by_symbol"]) == set(data)
    text = report.text(summary, result)
    for heading in ("win rate", "net PnL after fees", "max drawdown", "Sharpe", "Sortino", "profit factor",
                    "average hold", "exposure", "by exit reason", "by symbol"):
        assert heading in text


def test_drawdown_and_daily_returns_follow_their_definitions() -> None:
    """Drawdown is measured from the running peak; a day's return is its last equity over the day before's
    (the starting equity first); Sharpe and Sortino are annualised with √365."""
    assert metrics.drawdowns([100.0, 120.0, 90.0, 130.0], 100.0) == [0.0, 0.0, 0.25, 0.0]
    day = 86_400_000
    start = 1_704_067_200_000
    points = [EquityPoint(start + day // 2, 101.0, 101.0, 1), EquityPoint(start + day, 102.0, 102.0, 0),
              EquityPoint(start + day + 5, 99.0, 99.0, 0), EquityPoint(start + 2 * day, 99.0, 99.0, 0)]
    returns = metrics.daily_returns(points, 100.0)
    assert returns == [102.0 / 100.0 - 1, 99.0 / 102.0 - 1]
    mean = sum(returns) / 2
    sd = ((returns[0] - mean) ** 2 + (returns[1] - mean) ** 2) ** 0.5
    assert metrics.sharpe(returns) == mean / sd * 365 ** 0.5
    assert metrics.sortino(returns) == mean / ((returns[1] ** 2) / 2) ** 0.5 * 365 ** 0.5
    assert metrics.sharpe(returns[:1]) is None
