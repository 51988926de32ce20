"""Kline files: Binance kline rows read from disk, validated (what replay, training and the backtest read).

Files hold Binance kline rows, ``[open_time, open, high, low, close, volume, close_time, ...]``:

- JSON: a list of rows, numbers or strings — the 6-column form (``[open_time, o, h, l, c, v]``)
  or Binance's full 12-column form;
- CSV: the same column order, with or without a header row (as data.binance.vision publishes).

The format is told from the content (JSON starts with ``[``), not the file name; the whole file is
read at once (a year of one-minute klines is about half a million rows). Every row is
checked — open times increasing by whole intervals, ``high >= max(open, close)``,
``low <= min(open, close)``, positive prices, non-negative volume, and a ``close_time``, when
given, that belongs to the interval — and the first bad row raises :class:`KlineFileError`
naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from common.klines import Kline, interval_ms

#: open times at or above this are not epoch milliseconds (microsecond files exist on Binance)
_MAX_EPOCH_MS = 10**14
_MIN_COLUMNS = 6


class KlineFileError(ValueError):
    """A kline file that cannot be replayed; ``line`` is the 1-based line of the bad row (0: none)."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class _Row:
    line: int
    cells: Sequence[Any]


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
        rows.append(_Row(line_at(pos), cells))
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


def _csv_rows(text: str, path: str) -> list[_Row]:
    """The rows of a CSV file, without blank lines and without a leading header row."""
    rows: list[_Row] = []
    reader = csv.reader(io.StringIO(text))
    header_allowed = True
    for cells in reader:
        if not cells or all(not c.strip() for c in cells):
            continue
        if header_allowed and not _is_number(cells[0]):
            # the first row, when its open_time is not a number, is a header ("open_time,open,...")
            header_allowed = False
            continue
        header_allowed = False
        rows.append(_Row(reader.line_num, [c.strip() for c in cells]))
    return rows


def _is_number(text: str) -> bool:
    try:
        Decimal(text.strip())
    except InvalidOperation:
        return False
    return True


def _as_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("a boolean")
    if isinstance(value, (int, Decimal)):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        result = Decimal(value.strip())
    else:
        raise ValueError(f"a {type(value).__name__}")
    if not result.is_finite():
        raise ValueError("not finite")
    return result


def _as_int(value: Any) -> int:
    number = _as_decimal(value)
    if number != number.to_integral_value():
        raise ValueError("not an integer")
    return int(number)


_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


def _parse_rows(rows: Sequence[_Row], path: str, symbol: str, interval: str) -> list[Kline]:
    length = interval_ms(interval)
    klines: list[Kline] = []
    previous: int | None = None
    for row in rows:
        def bad(problem: str, row: _Row = row) -> KlineFileError:
            return KlineFileError(path, row.line, problem)

        cells = row.cells
        if len(cells) < _MIN_COLUMNS:
            raise bad(f"{len(cells)} columns, a kline row needs at least {_MIN_COLUMNS}")
        try:
            open_time = _as_int(cells[0])
        except (ValueError, InvalidOperation) as e:
            raise bad(f"open_time is not an integer: {cells[0]!r}") from e
        if not 0 <= open_time < _MAX_EPOCH_MS:
            raise bad(f"open_time {open_time} is not epoch milliseconds")
        values: list[Decimal] = []
        for name, cell in zip(_PRICE_COLUMNS, cells[1:6], strict=True):
            try:
                values.append(_as_decimal(cell))
            except (ValueError, InvalidOperation) as e:
                raise bad(f"{name} is not a number: {cell!r}") from e
        o, h, lo, c, v = values
        if min(o, h, lo, c) <= 0:
            raise bad("prices must be positive")
        if v < 0:
            raise bad("volume must not be negative")
        if h < max(o, c):
            raise bad(f"high {h} is below max(open, close) {max(o, c)}")
        if lo > min(o, c):
            raise bad(f"low {lo} is above min(open, close) {min(o, c)}")
        if previous is not None:
            if open_time <= previous:
                raise bad(f"open_time {open_time} does not increase (previous {previous})")
            if (open_time - previous) % length:
                raise bad(f"open_time {open_time} is not a whole number of {interval} after {previous}")
        if len(cells) > _MIN_COLUMNS and cells[6] not in ("", None):
            try:
                close_time = _as_int(cells[6])
            except (ValueError, InvalidOperation) as e:
                raise bad(f"close_time is not an integer: {cells[6]!r}") from e
            if close_time not in (open_time + length - 1, open_time + length):
                raise bad(f"close_time {close_time} does not end a {interval} kline opened at {open_time}")
        previous = open_time
        klines.append(Kline(symbol, interval, open_time, o, h, lo, c, v, True))
    return klines


def load_klines(path: str | Path, symbol: str, interval: str) -> list[Kline]:
    """All klines of a JSON or CSV kline file, validated; raises :class:`KlineFileError`."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise KlineFileError(name, 0, f"cannot read: {e}") from e
    stripped = text.lstrip()
    rows = _json_rows(text, name) if stripped.startswith(("[", "{")) else _csv_rows(text, name)
    return _parse_rows(rows, name, symbol, interval)
