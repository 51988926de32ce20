"""Kline files and their replay (services.marketdata.replay)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from common.kline_files import KlineFileError, load_klines
from common.klines import Kline
from services.marketdata.klines import KlineBuilder
from services.marketdata.replay import ReplaySource, ReplayTick, kline_ticks, split_volume

D = Decimal
T0 = 1_699_999_980_000  # a minute boundary
MIN = 60_000
#: (open, high, low, close, volume): rising, falling, flat, rising
ROWS = [("1.1893", "1.1954", "1.1891", "1.1941", "9289043.5"),
        ("1.1941", "1.1993", "1.1901", "1.1907", "7267451.9"),
        ("1.1907", "1.1907", "1.1907", "1.1907", "0"),
        ("1.1907", "1.2017", "1.1900", "1.2000", "5362935.4")]
HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
          "taker_buy_quote_volume,ignore")


def _expected() -> list[Kline]:
    return [Kline("XRPUSDT", "1m", T0 + i * MIN, D(o), D(h), D(low), D(c), D(v), True)
            for i, (o, h, low, c, v) in enumerate(ROWS)]


def _json6(path: Path) -> Path:
    """The 6-column JSON form, numbers as JSON numbers, one row per line."""
    lines = [f"  [{T0 + i * MIN}, {', '.join(row)}]" for i, row in enumerate(ROWS)]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n")
    return path


def _csv12(path: Path, header: bool) -> Path:
    """Binance's 12-column CSV form, optionally with data.binance.vision's header row."""
    lines = [HEADER] if header else []
    for i, (o, h, low, c, v) in enumerate(ROWS):
        open_time = T0 + i * MIN
        lines.append(f"{open_time},{o},{h},{low},{c},{v},{open_time + MIN - 1},1000.5,42,10.0,11.9,0")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_json_and_csv_forms_parse_to_the_same_klines(tmp_path: Path) -> None:
    """6-column JSON, 12-column JSON of strings and 12-column CSV with and without header agree."""
    rest = [[T0 + i * MIN, *row, T0 + (i + 1) * MIN - 1, "1", 3, "1", "1", "0"] for i, row in enumerate(ROWS)]
    (tmp_path / "rest.json").write_text(json.dumps(rest))

    for path in (_json6(tmp_path / "k6.json"), tmp_path / "rest.json",
                 _csv12(tmp_path / "header.csv", header=True), _csv12(tmp_path / "bare.csv", header=False)):
        assert load_klines(path, "XRPUSDT", "1m") == _expected(), path.name


def test_format_is_told_from_the_content(tmp_path: Path) -> None:
    """A JSON file named .csv and a CSV named .txt are read by what they hold, not by their names."""
    json_named_csv = _json6(tmp_path / "klines.csv")
    csv_named_txt = _csv12(tmp_path / "klines.txt", header=True)

    assert load_klines(json_named_csv, "XRPUSDT", "1m") == load_klines(csv_named_txt, "XRPUSDT", "1m")


@pytest.mark.parametrize(("line", "bad_row", "problem"), [
    (3, f"{T0 + MIN},1.19,1.18,1.17,1.185,5", "high 1.18 is below"),
    (3, f"{T0 + MIN},1.19,1.20,1.191,1.185,5", "low 1.191 is above"),
    (3, f"{T0 + MIN},0,1.20,0,1.185,5", "positive"),
    (3, f"{T0 + MIN},1.19,1.20,1.18,1.185,-5", "volume"),
    (3, f"{T0},1.19,1.20,1.18,1.185,5", "does not increase"),
    (3, f"{T0 + MIN + 1},1.19,1.20,1.18,1.185,5", "whole number of 1m"),
    (3, f"{T0 + MIN},1.19,1.20,1.18,abc,5", "close is not a number"),
    (3, f"{T0 + MIN},1.19,1.20,1.18", "4 columns"),
    (3, f"{T0 + MIN},1.19,1.20,1.18,1.185,5,{T0 + 5 * MIN}", "close_time"),
    (3, f"{T0 * 1000 + MIN},1.19,1.20,1.18,1.185,5", "not epoch milliseconds"),
    (3, f"x{T0 + MIN},1.19,1.20,1.18,1.185,5", "open_time is not an integer"),
])
def test_malformed_csv_row_raises_naming_the_line(tmp_path: Path, line: int, bad_row: str, problem: str
                                                  ) -> None:
    """A row that breaks a kline rule raises KlineFileError with the file's line number and the rule."""
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{T0},1.1,1.2,1.0,1.15,10\n{bad_row}\n{T0 + 2 * MIN},1.1,1.2,1.0,1.15,10\n")

    with pytest.raises(KlineFileError, match=re.escape(problem)) as caught:
        load_klines(path, "XRPUSDT", "1m")

    assert caught.value.line == line
    assert f"bad.csv:{line}:" in str(caught.value)


def test_malformed_json_row_raises_naming_the_line(tmp_path: Path) -> None:
    """In a JSON file with one row per line, the error names the line of the bad row."""
    path = tmp_path / "bad.json"
    path.write_text(f"[\n [{T0}, 1.1, 1.2, 1.0, 1.15, 10],\n [{T0 + MIN}, 1.1, 1.05, 1.0, 1.15, 10]\n]\n")

    with pytest.raises(KlineFileError, match=re.escape("high 1.05 is below")) as caught:
        load_klines(path, "XRPUSDT", "1m")

    assert caught.value.line == 3


def test_broken_json_raises_naming_the_line(tmp_path: Path) -> None:
    """JSON that does not parse is a KlineFileError at the line where it breaks."""
    path = tmp_path / "broken.json"
    path.write_text(f"[\n [{T0}, 1.1, 1.2, 1.0, 1.15, 10],\n [{T0 + MIN}, 1.1, 1.2,, 1.0]\n]\n")

    with pytest.raises(KlineFileError) as caught:
        load_klines(path, "XRPUSDT", "1m")

    assert caught.value.line == 3


@pytest.mark.parametrize(("speed", "offsets"), [
    (1.0, [MIN, 2 * MIN, 3 * MIN, 4 * MIN]),
    (60.0, [1_000, 2_000, 3_000, 4_000]),
    ("60", [1_000, 2_000, 3_000, 4_000]),
    (0, [0, 0, 0, 0]),
    ("max", [0, 0, 0, 0]),
])
def test_speed_scales_the_emit_offsets(tmp_path: Path, speed: float | str, offsets: list[int]) -> None:
    """Klines are emitted at their close: real time at speed 1, 60x sooner at 60, all at 0 when 'max'."""
    source = ReplaySource(_json6(tmp_path / "k.json"), "XRPUSDT", "1m", speed)

    assert [offset for offset, _ in source] == offsets
    assert [kline for _, kline in source] == _expected()


@pytest.mark.parametrize("speed", [-1.0, "fast", float("nan")])
def test_invalid_speed_is_rejected(tmp_path: Path, speed: float | str) -> None:
    """A negative, non-numeric or NaN speed is a ValueError."""
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(_json6(tmp_path / "k.json"), "XRPUSDT", "1m", speed)


def test_empty_file_has_nothing_to_replay(tmp_path: Path) -> None:
    """A file without klines cannot be replayed."""
    (tmp_path / "empty.json").write_text("[]")

    with pytest.raises(KlineFileError, match="no klines"):
        ReplaySource(tmp_path / "empty.json", "XRPUSDT", "1m")


def test_intra_kline_ticks_follow_the_candle_direction() -> None:
    """A rising candle trades open, low, high, close; a falling one open, high, low, close; inside the kline."""
    rising, falling = _expected()[0], _expected()[1]

    up = kline_ticks(rising, MIN)
    down = kline_ticks(falling, MIN)

    assert [t.price for t in up] == [rising.open, rising.low, rising.high, rising.close]
    assert [t.price for t in down] == [falling.open, falling.high, falling.low, falling.close]
    assert [t.ts - T0 for t in up] == [0, 20_000, 40_000, 59_999]
    assert sum(t.qty for t in up) == rising.volume


def test_split_volume_adds_up_exactly() -> None:
    """Volume split into ticks loses nothing to rounding."""
    for volume in (D("7267451.9000000004"), D("1"), D("0"), D("0.001")):
        parts = split_volume(volume, 4)
        assert len(parts) == 4 and sum(parts) == volume and min(parts) >= 0


def test_ticks_rebuild_the_replayed_klines(tmp_path: Path) -> None:
    """Feeding the derived ticks to a KlineBuilder reproduces every replayed kline."""
    source = ReplaySource(_csv12(tmp_path / "k.csv", header=True), "XRPUSDT", "1m", "max")
    builder = KlineBuilder.for_interval("XRPUSDT", "1m")

    rebuilt: list[Kline] = []
    for _, tick in source.ticks():
        rebuilt += builder.add(tick.ts, tick.price, tick.qty)
    rebuilt += builder.advance(T0 + len(ROWS) * MIN)

    assert rebuilt == source.klines


def test_events_merge_ticks_and_klines_in_time_order(tmp_path: Path) -> None:
    """events() gives each kline's four ticks and then the kline, with non-decreasing offsets."""
    source = ReplaySource(_json6(tmp_path / "k.json"), "XRPUSDT", "1m", 60.0)

    events = list(source.events())

    assert len(events) == 5 * len(ROWS)
    assert [type(e).__name__ for _, e in events[:5]] == ["ReplayTick"] * 4 + ["Kline"]
    assert [o for o, _ in events] == sorted(o for o, _ in events)
    assert events[:5][3] == (1_000, ReplayTick("XRPUSDT", T0 + MIN - 1, D("1.1941"), D("2322260.875")))
    assert events[4][0] == 1_000


def test_json_that_is_not_a_list_is_rejected(tmp_path: Path) -> None:
    """A JSON object instead of a list of rows is a KlineFileError, not a confusing CSV error."""
    (tmp_path / "obj.json").write_text('{"klines": []}')

    with pytest.raises(KlineFileError, match="list of rows"):
        load_klines(tmp_path / "obj.json", "XRPUSDT", "1m")
