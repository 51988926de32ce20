"""Kline files as Binance publishes them (common.kline_files): zip archives, header row or none,
milliseconds or microseconds, symbol and interval from the file name or the spacing, and several
files merged into one series. (The row rules themselves: tests/unit/marketdata/test_replay.py.)"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from common.kline_files import (
    KlineFileError,
    KlineFileName,
    load_kline_files,
    load_klines,
    merge_klines,
    parse_file_name,
)
from common.klines import Kline

D = Decimal
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
MIN5 = 300_000
HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
          "taker_buy_quote_volume,ignore")
#: (open, high, low, close, volume)
PRICES = [("2.0810", "2.0900", "2.0800", "2.0850", "1000.5"),
          ("2.0850", "2.0870", "2.0700", "2.0710", "2000"),
          ("2.0710", "2.0760", "2.0705", "2.0755", "0")]


def rows_csv(*, header: bool, micro: bool = False, start: int = T0, step: int = MIN5,
             prices: Sequence[tuple[str, ...]] = PRICES) -> str:
    """Binance's 12-column CSV; ``micro`` writes open and close times in microseconds (as spot files
    have since 2025)."""
    scale = 1000 if micro else 1
    lines = [HEADER] if header else []
    for i, (o, h, lo, c, v) in enumerate(prices):
        t = start + i * step
        close = (t + step) * scale - 1
        lines.append(f"{t * scale},{o},{h},{lo},{c},{v},{close},208.6,17,500.2,1040.1,0")
    return "\n".join(lines) + "\n"


def expected(symbol: str = "XRPUSDT", interval: str = "5m", start: int = T0, step: int = MIN5) -> list[Kline]:
    return [Kline(symbol, interval, start + i * step, D(o), D(h), D(lo), D(c), D(v), True)
            for i, (o, h, lo, c, v) in enumerate(PRICES)]


def write_zip(path: Path, members: dict[str, str]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize(("header", "micro"), [(True, False), (False, False), (True, True), (False, True)])
def test_binance_archive_as_downloaded(tmp_path: Path, header: bool, micro: bool) -> None:
    """A monthly futures archive, with or without the header row, in ms or µs: the same klines, open
    times in ms, symbol and interval taken from the archive's name."""
    path = write_zip(tmp_path / "XRPUSDT-5m-2025-01.zip",
                     {"XRPUSDT-5m-2025-01.csv": rows_csv(header=header, micro=micro)})

    assert load_klines(path) == expected()
    assert load_klines(path, "XRPUSDT", "5m") == expected()


def test_microseconds_are_converted_to_milliseconds(tmp_path: Path) -> None:
    """1735689600000000 µs is open time 1735689600000 ms; the µs close time 1735689899999999 ends that
    5m kline (checked after conversion)."""
    text = rows_csv(header=False, micro=True)
    assert text.startswith("1735689600000000,") and ",1735689899999999," in text
    (tmp_path / "DOGEUSDT-5m-2025-01-01.csv").write_text(text)

    klines = load_klines(tmp_path / "DOGEUSDT-5m-2025-01-01.csv")

    assert [k.open_time for k in klines] == [1_735_689_600_000, 1_735_689_900_000, 1_735_690_200_000]
    assert klines[0].symbol == "DOGEUSDT"


def test_a_row_in_the_other_unit_is_an_error(tmp_path: Path) -> None:
    """The unit is the first row's: a millisecond row in a microsecond file (or an open time that is not
    a whole millisecond) is named, not guessed."""
    lines = rows_csv(header=True, micro=True).splitlines()
    lines[2] = lines[2].replace(str((T0 + MIN5) * 1000), str(T0 + MIN5), 1)
    (tmp_path / "mixed.csv").write_text("\n".join(lines))
    with pytest.raises(KlineFileError, match="not epoch microseconds") as caught:
        load_klines(tmp_path / "mixed.csv", "XRPUSDT", "5m")
    assert caught.value.line == 3

    lines = rows_csv(header=False, micro=True).splitlines()
    lines[1] = lines[1].replace(str((T0 + MIN5) * 1000), str((T0 + MIN5) * 1000 + 7), 1)
    (tmp_path / "fraction.csv").write_text("\n".join(lines))
    with pytest.raises(KlineFileError, match="not a whole millisecond"):
        load_klines(tmp_path / "fraction.csv", "XRPUSDT", "5m")


def test_a_broken_first_row_is_not_taken_for_a_header(tmp_path: Path) -> None:
    """Only a first row of names is a header: a first data row with a bad open time is an error on line 1,
    not silently dropped."""
    lines = rows_csv(header=False).splitlines()
    lines[0] = "x" + lines[0]
    (tmp_path / "k.csv").write_text("\n".join(lines))
    with pytest.raises(KlineFileError, match="open_time is not an integer") as caught:
        load_klines(tmp_path / "k.csv", "XRPUSDT", "5m")
    assert caught.value.line == 1


def test_parsed_values_keep_every_digit(tmp_path: Path) -> None:
    """Prices and volume are the file's decimals exactly (no float rounding)."""
    (tmp_path / "k.csv").write_text(rows_csv(header=True, prices=[("0.123456789", "0.2", "0.1", "0.15",
                                                                  "7267451.9000000004")]))
    kline = load_klines(tmp_path / "k.csv", "XRPUSDT", "5m")[0]
    assert (kline.open, kline.volume) == (D("0.123456789"), D("7267451.9000000004"))


@pytest.mark.parametrize(("name", "named"), [
    ("BTCUSDT-1m-2024-01.zip", KlineFileName("BTCUSDT", "1m", "2024-01")),
    ("BTCUSDT-15m-2024-01-31.csv", KlineFileName("BTCUSDT", "15m", "2024-01-31")),
    ("BTCUSDT-1mo-2024-01.zip", KlineFileName("BTCUSDT", "1M", "2024-01")),
    ("BTCUSD_PERP-4h-2023-10.zip", KlineFileName("BTCUSD_PERP", "4h", "2023-10")),
    ("XRP_USDT_USDT-5m-futures.json", KlineFileName("XRPUSDT", "5m")),
    ("BTC_USDT-1h.json", KlineFileName("BTCUSDT", "1h")),
    ("klines.json", None),
    ("BTCUSDT-1m-2024.zip", None),
    ("BTCUSDT-1m-2024-01.zip.CHECKSUM", None),
])
def test_file_names(name: str, named: KlineFileName | None) -> None:
    """Binance's archive names (``1mo`` is the 1M interval) and freqtrade's data-file names."""
    assert parse_file_name(Path("/some/dir") / name) == named


def test_interval_from_the_spacing(tmp_path: Path) -> None:
    """Without an interval in the name: the greatest common step of the open times (15m steps with a
    missing kline are still 15m), or a single row's close_time; one bare row is an error."""
    rows = [[T0 + i * 900_000, "1", "1", "1", "1", "1"] for i in (0, 1, 3, 4)]
    (tmp_path / "gappy.json").write_text(json.dumps(rows))
    klines = load_klines(tmp_path / "gappy.json", "BTCUSDT")
    assert {k.interval for k in klines} == {"15m"} and len(klines) == 4

    (tmp_path / "one.csv").write_text(f"{T0},1,1,1,1,1,{T0 + 3_600_000 - 1}\n")
    assert load_klines(tmp_path / "one.csv", "BTCUSDT")[0].interval == "1h"

    (tmp_path / "bare.csv").write_text(f"{T0},1,1,1,1,1\n")
    with pytest.raises(KlineFileError, match="interval is unknown"):
        load_klines(tmp_path / "bare.csv", "BTCUSDT")


def test_the_name_and_the_caller_must_agree(tmp_path: Path) -> None:
    """Reading a 5m file as 1m would pass the spacing check (1m klines with gaps): it is refused, as is
    another symbol, and a file without a symbol in its name needs one."""
    (tmp_path / "XRPUSDT-5m-2025-01.csv").write_text(rows_csv(header=False))
    with pytest.raises(KlineFileError, match="says interval 5m, not 1m"):
        load_klines(tmp_path / "XRPUSDT-5m-2025-01.csv", "XRPUSDT", "1m")
    with pytest.raises(KlineFileError, match="says symbol XRPUSDT, not BTCUSDT"):
        load_klines(tmp_path / "XRPUSDT-5m-2025-01.csv", "BTCUSDT", "5m")
    (tmp_path / "k.csv").write_text(rows_csv(header=False))
    with pytest.raises(KlineFileError, match="does not give the symbol"):
        load_klines(tmp_path / "k.csv")


def test_zip_member_name_and_bad_archives(tmp_path: Path) -> None:
    """An archive renamed on disk is still told by the file inside; an archive with two files or a
    broken one is a KlineFileError."""
    renamed = write_zip(tmp_path / "download.zip", {"XRPUSDT-5m-2025-01.csv": rows_csv(header=True)})
    assert load_klines(renamed) == expected()

    two = write_zip(tmp_path / "two.zip", {"a.csv": rows_csv(header=True), "b.csv": rows_csv(header=True)})
    with pytest.raises(KlineFileError, match="holds 2"):
        load_klines(two, "XRPUSDT", "5m")

    broken = tmp_path / "XRPUSDT-5m-2025-02.zip"
    broken.write_bytes(renamed.read_bytes()[:40])
    with pytest.raises(KlineFileError, match="cannot read"):
        load_klines(broken)


def test_an_error_inside_an_archive_names_the_member_and_line(tmp_path: Path) -> None:
    """The archive, the file inside it and the line (the header is line 1)."""
    lines = rows_csv(header=True).splitlines()
    lines[2] = lines[2].replace("2.0870", "2.0800")  # high below open
    path = write_zip(tmp_path / "XRPUSDT-5m-2025-01.zip", {"XRPUSDT-5m-2025-01.csv": "\n".join(lines)})
    with pytest.raises(KlineFileError, match=re.escape("XRPUSDT-5m-2025-01.zip:XRPUSDT-5m-2025-01.csv:3: high")):
        load_klines(path)


def test_monthly_archives_merge_into_one_series(tmp_path: Path) -> None:
    """Files given in any order, a directory searched (its CHECKSUMs and other intervals left out),
    and a day that overlaps its month identically: one series per symbol in time order."""
    day = 86_400_000
    write_zip(tmp_path / "XRPUSDT-5m-2025-02.zip", {"x.csv": rows_csv(header=True, start=T0 + 31 * day)})
    write_zip(tmp_path / "XRPUSDT-5m-2025-01.zip", {"x.csv": rows_csv(header=False)})
    write_zip(tmp_path / "XRPUSDT-5m-2025-01-01.zip", {"x.csv": rows_csv(header=True)})  # same klines
    write_zip(tmp_path / "XRPUSDT-1h-2025-01.zip", {"x.csv": rows_csv(header=True, step=3_600_000)})
    (tmp_path / "XRPUSDT-5m-2025-01.zip.CHECKSUM").write_text("0" * 64 + "  XRPUSDT-5m-2025-01.zip\n")
    (tmp_path / "sub").mkdir()
    write_zip(tmp_path / "sub" / "BTCUSDT-5m-2025-01.zip", {"x.csv": rows_csv(header=True)})

    merged = load_kline_files([tmp_path], interval="5m")

    assert sorted(merged) == ["BTCUSDT", "XRPUSDT"]
    xrp = merged["XRPUSDT"]
    assert [k.open_time for k in xrp] == [T0, T0 + MIN5, T0 + 2 * MIN5,
                                          T0 + 31 * day, T0 + 31 * day + MIN5, T0 + 31 * day + 2 * MIN5]
    assert merged["BTCUSDT"] == expected("BTCUSDT")
    with pytest.raises(KlineFileError, match=r"in (1h and 5m|5m and 1h)"):
        load_kline_files([tmp_path])


def test_overlapping_files_that_disagree_are_refused() -> None:
    """A kline that differs between two files, or files off each other's grid, are errors; parts given
    newest first are put in order."""
    first = expected()
    other = [Kline(k.symbol, k.interval, k.open_time, k.open, k.high, k.low, k.close, k.volume + 1, True)
             for k in first[1:]]
    with pytest.raises(KlineFileError, match="differs between files"):
        merge_klines([first, other])
    shifted = [Kline(k.symbol, k.interval, k.open_time + 60_000, k.open, k.high, k.low, k.close, k.volume, True)
               for k in first]
    with pytest.raises(KlineFileError, match="not on one 5m grid"):
        merge_klines([first, [shifted[-1]]])
    assert merge_klines([first[2:], first[:2]]) == first
