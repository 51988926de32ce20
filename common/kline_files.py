"""Kline files: Binance kline rows read from disk, validated (what replay, training and the backtest read).

Files hold Binance kline rows, ``[open_time, open, high, low, close, volume, close_time, ...]``:

- JSON: a list of rows, numbers or strings — the 6-column form (``[open_time, o, h, l, c, v]``)
  or Binance's full 12-column form;
- CSV: the same column order, with or without a header row;
- a zip archive holding one such file (what data.binance.vision serves).

The format is told from the content (a zip by its signature, JSON by a leading ``[``), not the file
name; the whole file is read at once (a year of one-minute klines is about half a million rows).
Every row is checked — open times increasing by whole intervals, ``high >= max(open, close)``,
``low <= min(open, close)``, positive prices, non-negative volume, and a ``close_time``, when given,
that belongs to the interval — and the first bad row raises :class:`KlineFileError` naming the file
and line. Gaps (missing klines) are allowed: Binance's own archives have some.

**Timestamps** are epoch milliseconds or microseconds, told by magnitude on the file's first row
(an open time of 10^14 or more is microseconds: ms values stay below that until the year 5138) and
converted to milliseconds; a later row in the other unit is an error, not a guess.

**Symbol and interval** may be given or left empty (``""``). Left empty they come from the file name —
Binance's ``<SYMBOL>-<interval>-YYYY-MM[-DD].zip|csv`` or freqtrade's ``<BASE>_<QUOTE>[_<SETTLE>]-
<interval>[-futures].json`` — else the interval from the klines' spacing (the greatest common divisor
of the open-time steps, or a single row's ``close_time``). Given and contradicted by the file name,
they are an error (a 5m file read as 1m would pass the spacing check as 1m klines with gaps).

Sources for Binance's files (checked in binance/binance-public-data at commit 5c7f319, 2025-01-09):

- README.md: USD-M futures kline columns (from ``/fapi/v1/klines``): open time, open, high, low, close,
  volume, close time, quote asset volume, number of trades, taker buy base asset volume, taker buy
  quote asset volume, ignore; "the timestamp for SPOT data from January 1st 2025 onwards will be in
  microseconds" (futures examples there are milliseconds); each zip has a ``.CHECKSUM`` beside it
  checked with ``sha256sum -c``; ``1mo`` is the file-name spelling of the ``1M`` interval.
- python/download-kline.py, python/utility.py: the paths
  ``data/futures/um/{monthly,daily}/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM[-DD].zip``.
- issues #246 and #283: futures kline CSVs carry the header row
  ``open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,
  taker_buy_quote_volume,ignore`` from about 2022 on, earlier ones (and spot files) have none;
  #386/#387: the µs change on spot files since 2025-01-01; #297: gaps inside monthly archives.

Not confirmed (no file from data.binance.vision was downloaded here): that every archive holds
exactly one CSV named like the archive (the download scripts assume it; this reader accepts any one
member), and whether USD-M futures files will also move to microseconds (both units are read).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from common.klines import Kline, interval_ms, interval_name

#: open times at or above this are not epoch milliseconds (they are microseconds, up to _MAX_EPOCH_US)
_MAX_EPOCH_MS = 10**14
_MAX_EPOCH_US = 10**17
_MIN_COLUMNS = 6
_ZIP_MAGIC = b"PK\x03\x04"
#: what a directory given to :func:`load_kline_files` is searched for
KLINE_SUFFIXES = (".zip", ".csv", ".json")

#: ``BTCUSDT-5m-2024-01.zip``, ``BTCUSDT-5m-2024-01-15.csv``, ``BTCUSD_PERP-1mo-2024-01.zip``
_BINANCE_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]+(?:_[A-Z0-9]+)?)-(?P<interval>[1-9][0-9]*(?:[smhdw]|mo))"
    r"-(?P<period>[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?)\.(?:zip|csv)$")
#: freqtrade's data files: ``XRP_USDT-5m.json`` (spot), ``XRP_USDT_USDT-5m-futures.json`` (futures)
_FREQTRADE_NAME = re.compile(
    r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?:_[A-Z0-9]+)?-(?P<interval>[1-9][0-9]*[smhdwM])"
    r"(?:-futures)?\.(?:json|csv)$")


class KlineFileError(ValueError):
    """A kline file that cannot be replayed; ``line`` is the 1-based line of the bad row (0: none)."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class KlineFileName:
    """What a kline file's name says: its symbol, interval and (Binance's) period, ``2024-01`` or
    ``2024-01-15`` (empty when the name has none)."""

    symbol: str
    interval: str
    period: str = ""


def parse_file_name(path: str | Path) -> KlineFileName | None:
    """The symbol and interval a Binance or freqtrade file name gives, or None for another name."""
    name = Path(path).name
    match = _BINANCE_NAME.match(name)
    if match:
        interval = match.group("interval")
        return KlineFileName(match.group("symbol"), "1M" if interval == "1mo" else interval,
                             match.group("period"))
    match = _FREQTRADE_NAME.match(name)
    if match:
        return KlineFileName(match.group("base") + match.group("quote"), match.group("interval"))
    return None


#: one row of a file: its 1-based line and its cells
_Row = tuple[int, Sequence[Any]]


def _json_rows(text: str, path: str) -> list[_Row]:
    """The rows of a JSON list, each with the line it starts on (one-line files are all line 1)."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    rows: list[_Row] = []
    line, counted_to = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted_to
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        return line

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip(0)
    if pos >= len(text) or text[pos] != "[":
        raise KlineFileError(path, line_at(pos), "a JSON kline file is a list of rows")
    pos = skip(pos + 1)
    if pos < len(text) and text[pos] == "]":
        return rows
    while True:
        try:
            cells, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise KlineFileError(path, e.lineno, f"not JSON: {e.msg}") from e
        if not isinstance(cells, list):
            raise KlineFileError(path, line_at(pos), f"row {len(rows) + 1} is not a list")
        rows.append((line_at(pos), cells))
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
        elif pos < len(text) and text[pos] == "]":
            break
        else:
            raise KlineFileError(path, line_at(pos), "expected ',' or ']' after a row")
    if skip(pos + 1) != len(text):
        raise KlineFileError(path, line_at(skip(pos + 1)), "text after the end of the list")
    return rows


def _csv_rows(text: str) -> list[_Row]:
    """The rows of a CSV file, without blank lines and without a leading header row."""
    rows: list[_Row] = []
    reader = csv.reader(io.StringIO(text))
    header_allowed = True
    for cells in reader:
        if not cells or (not cells[0].strip() and all(not c.strip() for c in cells)):
            continue
        if header_allowed:
            header_allowed = False
            if not any(_is_number(c) for c in cells[:_MIN_COLUMNS]):
                # a first row of names is a header ("open_time,open,..."); one with numbers is data
                continue
        rows.append((reader.line_num, cells))
    return rows


def _is_number(text: str) -> bool:
    try:
        Decimal(text.strip())
    except InvalidOperation:
        return False
    return True


def _as_decimal(value: Any) -> Decimal:
    """A cell as a finite Decimal: ints, Decimals and numeric strings (floats by their repr)."""
    kind = type(value)
    if kind is str or kind is Decimal or kind is int:
        result = Decimal(value)  # InvalidOperation for a non-number; surrounding blanks are allowed
    elif kind is float:
        result = Decimal(repr(value))
    elif isinstance(value, bool):
        raise ValueError("a boolean")
    else:
        raise ValueError(f"a {kind.__name__}")
    if not result.is_finite():
        raise ValueError("not finite")
    return result


def _as_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is str:
        try:
            return int(value)
        except ValueError:
            pass  # "1.0e3", "12.0": through Decimal
    number = _as_decimal(value)
    if number != number.to_integral_value():
        raise ValueError("not an integer")
    return int(number)


def _open_time(cells: Sequence[Any], path: str, line: int) -> int:
    if len(cells) < _MIN_COLUMNS:
        raise KlineFileError(path, line, f"{len(cells)} columns, a kline row needs at least {_MIN_COLUMNS}")
    try:
        return _as_int(cells[0])
    except (ValueError, InvalidOperation) as e:
        raise KlineFileError(path, line, f"open_time is not an integer: {cells[0]!r}") from e


def _close_time(cells: Sequence[Any], path: str, line: int) -> int | None:
    """The row's close_time cell as an integer (None when the row has none), in the file's own unit."""
    if len(cells) <= _MIN_COLUMNS:
        return None
    cell = cells[6]
    if cell is None or (type(cell) is str and not cell.strip()):
        return None
    try:
        return _as_int(cell)
    except (ValueError, InvalidOperation) as e:
        raise KlineFileError(path, line, f"close_time is not an integer: {cell!r}") from e


def _time_unit(first_open_time: int, path: str, line: int) -> int:
    """How many of the file's time units make a millisecond: 1 (ms) or 1000 (µs), from the first row."""
    if 0 <= first_open_time < _MAX_EPOCH_MS:
        return 1
    if _MAX_EPOCH_MS <= first_open_time < _MAX_EPOCH_US:
        return 1000
    raise KlineFileError(path, line, f"open_time {first_open_time} is not epoch milliseconds or microseconds")


def _infer_interval(rows: Sequence[_Row], path: str) -> str:
    """The interval of the rows from their spacing: the greatest common divisor of the open-time steps,
    or, for a single row, its close_time."""
    if not rows:
        raise KlineFileError(path, 0, "no klines to tell the interval from; give it")
    line, cells = rows[0]
    unit = _time_unit(_open_time(cells, path, line), path, line)
    step = 0
    previous = _open_time(cells, path, line)
    for line, cells in rows[1:]:
        current = _open_time(cells, path, line)
        if current > previous:
            step = math.gcd(step, current - previous)
        previous = current
    if step == 0:
        line, cells = rows[0]
        close = _close_time(cells, path, line)
        if close is None:
            raise KlineFileError(path, line, "one kline without close_time: its interval is unknown; give it")
        step = close - _open_time(cells, path, line) + unit
    try:
        return interval_name(step // unit)
    except ValueError as e:
        raise KlineFileError(path, 0, f"cannot tell the interval from the klines' spacing: {e}") from e


_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


def _prices(cells: Sequence[Any], path: str, line: int, text: bool
            ) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    """open, high, low, close, volume of a row, each a finite Decimal, else the error naming the cell;
    ``text``: every cell is a string (a CSV row)."""
    if text:
        try:
            o, h, lo, c, v = map(Decimal, cells[1:6])  # the fast path: text cells (every CSV)
            if o.is_finite() and h.is_finite() and lo.is_finite() and c.is_finite() and v.is_finite():
                return o, h, lo, c, v
        except (InvalidOperation, ValueError):
            pass
    values: list[Decimal] = []
    for name, cell in zip(_PRICE_COLUMNS, cells[1:6], strict=True):
        try:
            values.append(_as_decimal(cell))
        except (ValueError, InvalidOperation) as e:
            raise KlineFileError(path, line, f"{name} is not a number: {cell!r}") from e
    o, h, lo, c, v = values
    return o, h, lo, c, v


def _parse_rows(rows: Sequence[_Row], path: str, symbol: str, interval: str, *, text: bool = False) -> list[Kline]:
    """The klines of the rows, each checked; ``text`` when every cell is a string (CSV)."""
    length = interval_ms(interval)
    klines: list[Kline] = []
    append = klines.append
    previous: int | None = None
    unit = 0
    unit_name = ""
    low_limit = high_limit = 0
    for line, cells in rows:
        raw_open = _open_time(cells, path, line)
        if not unit:
            unit = _time_unit(raw_open, path, line)
            unit_name = "milliseconds" if unit == 1 else "microseconds"
            low_limit, high_limit = (0, _MAX_EPOCH_MS) if unit == 1 else (_MAX_EPOCH_MS, _MAX_EPOCH_US)
        if not low_limit <= raw_open < high_limit:
            raise KlineFileError(path, line, f"open_time {raw_open} is not epoch {unit_name} "
                                             "(as the file's first row is)")
        if unit == 1:
            open_time = raw_open
        else:
            open_time, rest = divmod(raw_open, unit)
            if rest:
                raise KlineFileError(path, line, f"open_time {raw_open} µs is not a whole millisecond")
        o, h, lo, c, v = _prices(cells, path, line, text)
        problem = _price_problem(o, h, lo, c, v)
        if not problem and previous is not None:
            if open_time <= previous:
                problem = f"open_time {open_time} does not increase (previous {previous})"
            elif (open_time - previous) % length:
                problem = f"open_time {open_time} is not a whole number of {interval} after {previous}"
        if not problem:
            raw_close = _close_time(cells, path, line)
            if raw_close is not None:
                close_time = raw_close // unit
                if close_time != open_time + length - 1 and close_time != open_time + length:
                    problem = f"close_time {close_time} does not end a {interval} kline opened at {open_time}"
        if problem:
            raise KlineFileError(path, line, problem)
        previous = open_time
        append(Kline(symbol, interval, open_time, o, h, lo, c, v, True))
    return klines


def _price_problem(o: Decimal, h: Decimal, lo: Decimal, c: Decimal, v: Decimal) -> str:
    """What breaks the kline rules in these prices, or ""."""
    if o <= 0 or h <= 0 or lo <= 0 or c <= 0:
        return "prices must be positive"
    if v < 0:
        return "volume must not be negative"
    if h < o or h < c:
        return f"high {h} is below max(open, close) {max(o, c)}"
    if lo > o or lo > c:
        return f"low {lo} is above min(open, close) {min(o, c)}"
    return ""


def _read(path: Path) -> tuple[str, str, Path]:
    """``(name for messages, text, the name to infer from)``: a file's text, or the one member of a zip."""
    name = str(path)
    try:
        data = path.read_bytes()
        if not data.startswith(_ZIP_MAGIC):
            return name, data.decode("utf-8-sig"), path
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise KlineFileError(name, 0, f"a kline archive holds one file, this one holds {len(members)}")
            member = members[0]
            text = archive.read(member).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile, EOFError) as e:
        raise KlineFileError(name, 0, f"cannot read: {e}") from e
    return f"{name}:{member.filename}", text, Path(member.filename)


def _resolve(given: str, from_name: str, what: str, path: str) -> str:
    if given and from_name and given != from_name:
        raise KlineFileError(path, 0, f"the file name says {what} {from_name}, not {given}")
    return given or from_name


def load_klines(path: str | Path, symbol: str = "", interval: str = "") -> list[Kline]:
    """All klines of a JSON, CSV or zipped kline file, validated, open times in ms; raises
    :class:`KlineFileError`. An empty ``symbol``/``interval`` is taken from the file name (and the
    interval else from the spacing); a symbol the name does not give is an error."""
    source = Path(path)
    name, text, inner = _read(source)
    stripped = text.lstrip()
    is_json = stripped.startswith(("[", "{"))
    rows = _json_rows(text, name) if is_json else _csv_rows(text)
    named = parse_file_name(source) or parse_file_name(inner)
    symbol = _resolve(symbol, named.symbol if named else "", "symbol", name)
    interval = _resolve(interval, named.interval if named else "", "interval", name)
    if not symbol:
        raise KlineFileError(name, 0, "the file name does not give the symbol; give it")
    if not interval:
        interval = _infer_interval(rows, name)
    try:
        interval_ms(interval)
    except ValueError as e:
        raise KlineFileError(name, 0, str(e)) from e
    return _parse_rows(rows, name, symbol, interval, text=not is_json)


def kline_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and directories expanded to the kline files under them (sorted, recursive)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in KLINE_SUFFIXES))
        else:
            found.append(path)
    return found


def merge_klines(parts: Sequence[Sequence[Kline]], path: str = "") -> list[Kline]:
    """Klines of one symbol and interval from several files (e.g. monthly archives) as one series in
    time order; a kline present in two files must be identical there (kept once), else
    :class:`KlineFileError`, as when the files are not on one interval grid."""
    ordered = sorted((p for p in parts if p), key=lambda p: p[0].open_time)
    merged: list[Kline] = []
    for part in ordered:
        start = 0
        if merged and part[0].open_time <= merged[-1].open_time:
            seen = {k.open_time: k for k in merged if k.open_time >= part[0].open_time}
            while start < len(part) and part[start].open_time <= merged[-1].open_time:
                kline = part[start]
                if seen.get(kline.open_time, kline) != kline:
                    raise KlineFileError(path, 0, f"{kline.symbol} kline at {kline.open_time} differs between files")
                start += 1
        if merged and start < len(part):
            gap = part[start].open_time - merged[-1].open_time
            if gap % interval_ms(part[0].interval):
                raise KlineFileError(path, 0, f"{part[0].symbol} files are not on one {part[0].interval} grid "
                                              f"({merged[-1].open_time} then {part[start].open_time})")
        merged.extend(part[start:])
    return merged


def load_kline_files(paths: Iterable[str | Path], symbol: str = "", interval: str = "") -> dict[str, list[Kline]]:
    """The klines of several files and directories, merged per symbol (:func:`merge_klines`); symbol and
    interval as for :func:`load_klines`. Under a directory, files whose name gives another interval than
    ``interval`` are skipped; one symbol in two intervals is an error."""
    given = [Path(p) for p in paths]
    by_symbol: dict[str, list[list[Kline]]] = {}
    for path in kline_paths(given):
        named = parse_file_name(path)
        if interval and named is not None and named.interval != interval and path not in given:
            continue
        klines = load_klines(path, symbol, interval)
        if not klines:
            continue
        parts = by_symbol.setdefault(klines[0].symbol, [])
        if parts and parts[0][0].interval != klines[0].interval:
            raise KlineFileError(str(path), 0, f"{klines[0].symbol} in {parts[0][0].interval} and "
                                               f"{klines[0].interval}; give the interval")
        parts.append(klines)
    return {sym: merge_klines(parts, sym) for sym, parts in sorted(by_symbol.items())}
