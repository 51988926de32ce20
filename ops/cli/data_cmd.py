"""``qt data download``: Binance's public USD-M futures kline archives from data.binance.vision, verified.

What the site holds (binance/binance-public-data at commit 5c7f319, 2025-01-09: README.md,
python/download-kline.py, python/utility.py, python/enums.py):
``data/futures/um/monthly/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM.zip`` and
``data/futures/um/daily/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM-DD.zip``, each with a
``<file>.zip.CHECKSUM`` beside it, checked with ``sha256sum -c``: the hex digest, two spaces, the file
name, no trailing newline (as quoted in the project's issues #43 and #241; #440 lists the daily
futures ``.CHECKSUM`` files). "New daily data becoming available the next day and new monthly data at
the first monday of the month" (README): so an ended month is fetched as its monthly archive (falling
back to its daily ones while last month's is not out yet), the current month as daily archives up to
yesterday, and nothing of today. Daily archives exist for intervals up to ``1d`` only
(``DAILY_INTERVALS``); the ``1M`` interval (spelt ``1mo`` in file names) is not offered, as its klines
have no fixed length. Not confirmed here (no request to the real site was made): that the site
answers 404 for a missing file and honours HTTP range requests (a server that ignores the range is
handled: the file is fetched whole).

The archives land under ``--dest`` at the site's own paths (``<dest>/data/futures/um/...``), next to
their ``.CHECKSUM``; :func:`common.kline_files.load_kline_files` reads the directory as it is. An
archive whose local copy matches its local checksum is skipped without a request; a partial download
(``.part``) is resumed with a range request; every request has a timeout, and a transient failure
(connection, timeout, 429, 5xx) is tried three times. A digest that does not match is refused: the file
is deleted and the run exits 1, as it does for an archive the site does not have (404).
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from common.config import REPO_ROOT
from common.klines import BINANCE_INTERVALS
from ops.cli.context import new_app

if TYPE_CHECKING:
    import httpx
    from rich.progress import TaskID

DEFAULT_BASE_URL = "https://data.binance.vision"
BASE_URL_ENV = "QT_DATA_BASE_URL"
DEFAULT_DEST = "var/klines"
#: daily archives exist for these intervals only (binance-public-data python/enums.py DAILY_INTERVALS)
DAILY_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
EXIT_FAILED = 1
EX_USAGE = 64
_CHUNK = 1 << 16
_ATTEMPTS = 3
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

app = new_app(help="Market data files: Binance's public kline archives.", no_args_is_help=True)


@dataclass(frozen=True)
class Archive:
    """One kline archive of the site: a month (``period`` ``2024-01``) or a day (``2024-01-15``)."""

    symbol: str
    interval: str
    period: str

    @property
    def daily(self) -> bool:
        return len(self.period) == len("2024-01-15")

    @property
    def path(self) -> str:
        """The archive's path on the site, which is also its path under ``--dest``."""
        spelt = "1mo" if self.interval == "1M" else self.interval
        kind = "daily" if self.daily else "monthly"
        return f"data/futures/um/{kind}/klines/{self.symbol}/{spelt}/{self.symbol}-{spelt}-{self.period}.zip"


class DownloadError(Exception):
    """An archive that could not be had: missing on the site, refused by its checksum, or unreachable."""


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def daily_archives(symbol: str, interval: str, first: date, last: date) -> list[Archive]:
    return [Archive(symbol, interval, day.isoformat()) for day in _days(first, last)]


def plan(symbols: list[str], interval: str, start: date, end: date, today: date) -> list[Archive]:
    """The archives covering ``start``..``end`` (inclusive) as published on ``today`` (UTC): whole ended
    months as monthly archives, the current month as daily ones up to yesterday."""
    last = min(end, today - timedelta(days=1))
    archives: list[Archive] = []
    for symbol in symbols:
        month = start.replace(day=1)
        while month <= last:
            if _month_end(month) < today.replace(day=1):
                archives.append(Archive(symbol, interval, f"{month.year:04d}-{month.month:02d}"))
            else:
                archives.extend(daily_archives(symbol, interval, max(start, month), last))
            month = _month_end(month) + timedelta(days=1)
    return archives


def monthly_fallback(archive: Archive, start: date, end: date, today: date) -> list[Archive]:
    """The daily archives standing in for last month's monthly one before it is published (the first
    Monday of this month); none for an older month (its monthly archive is simply missing)."""
    first = date.fromisoformat(archive.period + "-01")
    this_month = today.replace(day=1)
    if archive.daily or archive.interval not in DAILY_INTERVALS or _month_end(first) + timedelta(days=1) != this_month:
        return []
    return daily_archives(archive.symbol, archive.interval, max(first, start), min(_month_end(first), end))


def parse_checksum(text: str, archive_name: str) -> str:
    """The sha256 hex digest of a ``.CHECKSUM`` file (``<digest>  <name>``); DownloadError when it is not
    one, or names another file."""
    parts = text.split()
    if not parts or not _HEX64.match(parts[0]):
        raise DownloadError(f"{archive_name}.CHECKSUM is not a sha256 checksum: {text[:80]!r}")
    if len(parts) > 1 and parts[1].lstrip("*") != archive_name:
        raise DownloadError(f"{archive_name}.CHECKSUM is the checksum of {parts[1]}")
    return parts[0].lower()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(zip_path: Path) -> bool:
    """True when the archive and its checksum are both here and agree (nothing to fetch)."""
    checksum = zip_path.with_name(zip_path.name + ".CHECKSUM")
    if not (zip_path.is_file() and checksum.is_file()):
        return False
    try:
        return sha256_of(zip_path) == parse_checksum(checksum.read_text(encoding="utf-8"), zip_path.name)
    except (DownloadError, OSError, UnicodeDecodeError):
        return False


class Missing(DownloadError):
    """The site answered 404."""


class Fetcher:
    """GETs from the site with a timeout on every request and a few retries on transient failures."""

    def __init__(self, client: httpx.Client, base_url: str, progress: _Progress) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.progress = progress

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def _retrying(self, path: str, attempt_fn: Callable[[], None]) -> None:
        import httpx

        for attempt in range(1, _ATTEMPTS + 1):
            try:
                attempt_fn()
                return
            except (httpx.TransportError, _Transient) as e:
                if attempt == _ATTEMPTS:
                    raise DownloadError(f"{self.url(path)}: {e or type(e).__name__} "
                                        f"(after {_ATTEMPTS} attempts)") from e
                time.sleep(0.5 * attempt)

    def text(self, path: str) -> str:
        result: list[str] = []

        def attempt() -> None:
            response = self.client.get(self.url(path))
            _check(response, self.url(path))
            result.append(response.text)

        self._retrying(path, attempt)
        return result[0]

    def to_file(self, path: str, part: Path) -> None:
        """The archive into ``part``, resuming what an earlier run left there."""

        def attempt() -> None:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with self.client.stream("GET", self.url(path), headers=headers) as response:
                if response.status_code == 416 and have:  # the part already holds the whole file
                    return
                _check(response, self.url(path))
                resumed = response.status_code == 206
                total = response.headers.get("content-length")
                size = int(total) + (have if resumed else 0) if total and total.isdigit() else None
                self.progress.start_file(part.name.removesuffix(".part"), size, have if resumed else 0)
                with part.open("ab" if resumed else "wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
                        self.progress.advance(len(chunk))

        self._retrying(path, attempt)


class _Transient(Exception):
    """A 5xx or 429 answer: worth another try."""


def _check(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status == 404:
        raise Missing(f"not on the site (404): {url}")
    if status == 429 or status >= 500:
        raise _Transient(f"HTTP {status}")
    if status not in (200, 206):
        raise DownloadError(f"HTTP {status}: {url}")


class _Progress:
    """A progress bar on stderr: archives done of all, and the bytes of the one being fetched."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
        from rich.progress import Task as RichTask
        from rich.text import Text

        class Amount(ProgressColumn):
            """Bytes for a file's row, a count for the archives' row."""

            def __init__(self) -> None:
                super().__init__()
                self.bytes, self.count = DownloadColumn(), MofNCompleteColumn()

            def render(self, task: RichTask) -> Text:
                return (self.bytes if task.fields.get("bytes") else self.count).render(task)

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), Amount(),
                            console=Console(stderr=True), disable=not enabled)
        self.files = self.bar.add_task("archives", total=total)
        self.current: TaskID | None = None

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.stop()

    def add_archives(self, count: int) -> None:
        self.bar.update(self.files, total=(self.bar.tasks[self.files].total or 0) + count)

    def start_file(self, name: str, size: int | None, done: int) -> None:
        if self.current is not None:
            self.bar.remove_task(self.current)
        self.current = self.bar.add_task(f"  {name}", total=size, completed=done, bytes=True)

    def advance(self, count: int) -> None:
        if self.current is not None:
            self.bar.advance(self.current, count)

    def file_done(self) -> None:
        if self.current is not None:
            self.bar.remove_task(self.current)
            self.current = None
        self.bar.advance(self.files)


def fetch_archive(fetcher: Fetcher, archive: Archive, dest: Path) -> str:
    """Fetch and verify one archive into ``dest``; ``"skipped"`` (already verified) or ``"downloaded"``.
    DownloadError (Missing for a 404) when it cannot be had; nothing unverified is left as a ``.zip``."""
    target = dest / archive.path
    if verified(target):
        return "skipped"
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = parse_checksum(fetcher.text(archive.path + ".CHECKSUM"), target.name)
    part = target.with_name(target.name + ".part")
    checksum_file = target.with_name(target.name + ".CHECKSUM")
    target.unlink(missing_ok=True)
    resumed = part.exists()
    while True:
        fetcher.to_file(archive.path, part)
        actual = sha256_of(part)
        if actual == expected:
            os.replace(part, target)
            checksum_file.write_text(f"{expected}  {target.name}\n", encoding="utf-8")
            return "downloaded"
        part.unlink(missing_ok=True)
        if not resumed:  # a resumed part that fails the check is fetched once more, whole
            raise DownloadError(f"checksum mismatch, refused and deleted: {fetcher.url(archive.path)} "
                                f"(sha256 {actual}, its .CHECKSUM says {expected})")
        resumed = False


def _parse_day(value: str, *, end: bool) -> date:
    """``YYYY-MM-DD``, or ``YYYY-MM`` (its first day, or its last for ``end``)."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}", value):
            first = date.fromisoformat(value + "-01")
            return _month_end(first) if end else first
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD or YYYY-MM): {value!r}") from None


@app.command("download")
def download(
    symbols: str = typer.Option(..., "--symbols", help="Comma-separated USD-M symbols, e.g. BTCUSDT,ETHUSDT."),
    interval: str = typer.Option(..., "--interval", help="Kline interval, e.g. 1m, 5m, 1h, 1d."),
    start: str = typer.Option(..., "--from", help="First day (UTC), YYYY-MM-DD or YYYY-MM."),
    end: str = typer.Option(..., "--to", help="Last day (UTC, inclusive), YYYY-MM-DD or YYYY-MM."),
    dest: Path = typer.Option(REPO_ROOT / DEFAULT_DEST, "--dest", help="Where the archives go (site paths)."),
    base_url: str = typer.Option(DEFAULT_BASE_URL, "--base-url", envvar=BASE_URL_ENV,
                                 help="The public data site."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds allowed per request (each of "
                                  "connect, read, write)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Download Binance USD-M futures kline archives (monthly, daily for the current month) with their
    sha256 checks; an archive already here and verified is skipped."""
    import httpx

    names = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    bad = [s for s in names if not re.fullmatch(r"[A-Z0-9]+(?:_[A-Z0-9]+)?", s)]
    if not names or bad:
        typer.echo(f"qt data download: not symbols: {symbols!r}", err=True)
        raise SystemExit(EX_USAGE)
    if interval not in BINANCE_INTERVALS or interval == "1M":
        typer.echo(f"qt data download: interval {interval!r} is not one of "
                   f"{', '.join(i for i in BINANCE_INTERVALS if i != '1M')}", err=True)
        raise SystemExit(EX_USAGE)
    first, last = _parse_day(start, end=False), _parse_day(end, end=True)
    today = datetime.now(UTC).date()
    if last < first:
        typer.echo(f"qt data download: --to {end} is before --from {start}", err=True)
        raise SystemExit(EX_USAGE)
    archives = plan(names, interval, first, last, today)
    if not archives:
        typer.echo(f"qt data download: nothing published for {first}..{last} yet (daily archives appear the "
                   "next day)", err=True)
        raise SystemExit(EXIT_FAILED)
    if interval not in DAILY_INTERVALS and any(a.daily for a in archives):
        archives = [a for a in archives if not a.daily]
        typer.echo(f"qt data download: {interval} has no daily archives; the current month is left out", err=True)

    counts = {"downloaded": 0, "skipped": 0}
    failures: list[str] = []
    queue = list(archives)
    interactive = progress and sys.stderr.isatty()
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True) as client, \
            _Progress(len(queue), enabled=interactive) as bar:
        fetcher = Fetcher(client, base_url, bar)
        while queue:
            archive = queue.pop(0)
            try:
                outcome = fetch_archive(fetcher, archive, dest)
            except Missing as e:
                fallback = monthly_fallback(archive, first, last, today)
                if fallback:
                    queue[:0] = fallback
                    bar.add_archives(len(fallback))
                    bar.file_done()
                    continue
                failures.append(str(e))
                outcome = "failed"
            except DownloadError as e:
                failures.append(str(e))
                outcome = "failed"
            bar.file_done()
            if outcome != "failed":
                counts[outcome] += 1
                if not interactive:
                    typer.echo(f"{outcome:<10} {dest / archive.path}", err=True)
    for failure in failures:
        typer.echo(f"qt data download: {failure}", err=True)
    typer.echo(f"{counts['downloaded']} downloaded, {counts['skipped']} already verified, {len(failures)} failed; "
               f"archives under {dest}")
    if failures:
        raise SystemExit(EXIT_FAILED)
