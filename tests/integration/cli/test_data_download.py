"""``qt data download`` against a fake data.binance.vision served from a thread: the archives and their
checksums land at the site's paths and read back as klines, verified files are skipped without a
request, a checksum mismatch is refused and deleted, a 404 is a clear failure, a partial download is
resumed with a range request, and a stalled server times out. No test reaches the internet."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from common.kline_files import load_kline_files
from ops.cli.data_cmd import (
    Archive,
    DownloadError,
    Fetcher,
    _Progress,
    fetch_archive,
    monthly_fallback,
    plan,
)
from tests.integration.cli.qt import qt

HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
          "taker_buy_quote_volume,ignore")
HOUR = 3_600_000


def month_csv(symbol: str, year: int, month: int, *, header: bool, base: float) -> bytes:
    """A month of 1h klines in Binance's 12-column CSV (close = base + i/1000)."""
    start = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC).timestamp() * 1000)
    lines = [HEADER] if header else []
    for i, t in enumerate(range(start, end, HOUR)):
        c = base + i / 1000
        lines.append(f"{t},{c:.4f},{c + 0.01:.4f},{c - 0.01:.4f},{c:.4f},10,{t + HOUR - 1},100,5,4,40,0")
    return ("\n".join(lines) + "\n").encode()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


class FakeSite:
    """Files by path; records every request as (path, Range header). ``stall`` makes every answer wait
    until the event is set (a server that stopped sending)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.stall = threading.Event()
        self.stalling = False
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append((self.path, self.headers.get("Range", "")))
                if site.stalling:
                    site.stall.wait(10)
                body = site.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                wanted = self.headers.get("Range", "")
                if wanted.startswith("bytes="):
                    first = int(wanted.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
                    body = body[first:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def publish(self, archive: Archive, data: bytes, *, checksum: str | None = None) -> bytes:
        """Serve ``data`` zipped at the archive's path, with its CHECKSUM (or the one given)."""
        name = archive.path.rsplit("/", 1)[1]
        body = zipped(name.replace(".zip", ".csv"), data)
        digest = checksum or hashlib.sha256(body).hexdigest()
        self.files[archive.path] = body
        self.files[archive.path + ".CHECKSUM"] = f"{digest}  {name}".encode()
        return body


@pytest.fixture
def site() -> Iterator[FakeSite]:
    fake = FakeSite()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stall.set()
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(5)


def download(site: FakeSite, dest: Path, *args: str) -> tuple[int, str, str]:
    done = qt("redis://127.0.0.1:1/0", "data", "download", "--base-url", site.url, "--dest", str(dest), *args)
    return done.returncode, done.stdout, done.stderr


def test_plan_months_whole_and_the_current_month_by_day() -> None:
    """Ended months are monthly archives; the current month daily ones up to yesterday (today's is not
    out); a range wholly in the past touches only the months it overlaps."""
    today = date(2024, 3, 5)
    archives = plan(["BTCUSDT"], "5m", date(2024, 1, 20), date(2024, 3, 31), today)
    assert [a.period for a in archives] == ["2024-01", "2024-02", "2024-03-01", "2024-03-02", "2024-03-03",
                                            "2024-03-04"]
    assert archives[0].path == "data/futures/um/monthly/klines/BTCUSDT/5m/BTCUSDT-5m-2024-01.zip"
    assert archives[2].path == "data/futures/um/daily/klines/BTCUSDT/5m/BTCUSDT-5m-2024-03-01.zip"
    assert [a.period for a in plan(["A", "B"], "1h", date(2023, 5, 2), date(2023, 6, 1), today)] == \
        ["2023-05", "2023-06", "2023-05", "2023-06"]
    assert plan(["BTCUSDT"], "1m", today, today, today) == []


def test_last_months_archive_falls_back_to_days_until_published() -> None:
    """Last month's monthly archive appears on the first Monday: until then its days stand in (within the
    range); an older month has no fallback, nor does an interval without daily archives."""
    today = date(2024, 3, 2)
    feb = Archive("BTCUSDT", "1h", "2024-02")
    days = monthly_fallback(feb, date(2024, 2, 27), date(2024, 3, 1), today)
    assert [a.period for a in days] == ["2024-02-27", "2024-02-28", "2024-02-29"]
    assert monthly_fallback(Archive("BTCUSDT", "1h", "2024-01"), date(2024, 1, 1), date(2024, 3, 1), today) == []
    assert monthly_fallback(Archive("BTCUSDT", "1w", "2024-02"), date(2024, 2, 1), date(2024, 3, 1), today) == []


def test_download_verifies_reads_back_and_skips_verified(site: FakeSite, tmp_path: Path) -> None:
    """Two symbols, two months (one CSV with Binance's header row, one without): four archives with their
    CHECKSUMs at the site's paths, read back as 1h klines per symbol, merged across the months. A second
    run requests nothing and says all four were already verified."""
    jan, feb = ("2024-01", 1), ("2024-02", 2)
    for symbol, base in (("BTCUSDT", 100.0), ("ETHUSDT", 50.0)):
        for period, month in (jan, feb):
            site.publish(Archive(symbol, "1h", period), month_csv(symbol, 2024, month, header=month == 2, base=base))
    dest = tmp_path / "klines"

    code, out, err = download(site, dest, "--symbols", "btcusdt,ETHUSDT", "--interval", "1h",
                              "--from", "2024-01-10", "--to", "2024-02")

    assert code == 0, err
    assert "4 downloaded, 0 already verified, 0 failed" in out
    zips = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.zip"))
    assert zips == [f"data/futures/um/monthly/klines/{s}/1h/{s}-1h-2024-0{m}.zip"
                    for s in ("BTCUSDT", "ETHUSDT") for m in (1, 2)]
    for path in dest.rglob("*.zip"):
        checksum = path.with_name(path.name + ".CHECKSUM").read_text()
        assert checksum.split() == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]
    assert not list(dest.rglob("*.part"))
    klines = load_kline_files([dest])
    assert sorted(klines) == ["BTCUSDT", "ETHUSDT"]
    btc = klines["BTCUSDT"]
    assert len(btc) == (31 + 29) * 24 and {k.interval for k in btc} == {"1h"}
    assert btc[0].open_time == int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert btc[744].open_time - btc[743].open_time == HOUR  # January's last, February's first
    assert btc[744].close == Decimal("100.0000") and klines["ETHUSDT"][1].close == Decimal("50.0010")

    before = len(site.requests)
    code, out, err = download(site, dest, "--symbols", "BTCUSDT,ETHUSDT", "--interval", "1h",
                              "--from", "2024-01-10", "--to", "2024-02-29")
    assert code == 0, err
    assert "0 downloaded, 4 already verified, 0 failed" in out
    assert len(site.requests) == before


def test_checksum_mismatch_is_refused_and_deleted(site: FakeSite, tmp_path: Path) -> None:
    """An archive whose sha256 is not its CHECKSUM's: exit 1, one line naming it, nothing left behind (no
    zip, no part) — and the good archive beside it is kept."""
    good, bad = Archive("BTCUSDT", "1h", "2024-01"), Archive("BTCUSDT", "1h", "2024-02")
    site.publish(good, month_csv("BTCUSDT", 2024, 1, header=True, base=100.0))
    site.publish(bad, month_csv("BTCUSDT", 2024, 2, header=True, base=100.0), checksum="0" * 64)
    dest = tmp_path / "klines"

    code, out, err = download(site, dest, "--symbols", "BTCUSDT", "--interval", "1h", "--from", "2024-01",
                              "--to", "2024-02")

    assert code == 1
    refusals = [line for line in err.splitlines() if "checksum mismatch" in line]
    assert len(refusals) == 1 and bad.path in refusals[0] and "0" * 64 in refusals[0]
    assert "1 downloaded, 0 already verified, 1 failed" in out
    assert (dest / good.path).is_file()
    assert sorted(p.name for p in (dest / bad.path).parent.iterdir()) == [
        "BTCUSDT-1h-2024-01.zip", "BTCUSDT-1h-2024-01.zip.CHECKSUM"]


def test_missing_archive_is_a_clear_failure(site: FakeSite, tmp_path: Path) -> None:
    """A symbol the site does not have: exit 1 and a line with 404 and the URL it tried."""
    code, out, err = download(site, tmp_path, "--symbols", "NOPEUSDT", "--interval", "5m", "--from", "2023-01-01",
                              "--to", "2023-01-31")

    assert code == 1
    assert (f"not on the site (404): {site.url}/data/futures/um/monthly/klines/NOPEUSDT/5m/"
            "NOPEUSDT-5m-2023-01.zip.CHECKSUM") in err
    assert "0 downloaded, 0 already verified, 1 failed" in out


def test_bad_arguments_are_usage_errors(site: FakeSite, tmp_path: Path) -> None:
    """An unknown interval or a range that ends before it starts: exit 64, nothing requested."""
    code, _, err = download(site, tmp_path, "--symbols", "BTCUSDT", "--interval", "7m", "--from", "2023-01",
                            "--to", "2023-02")
    assert code == 64 and "interval '7m'" in err
    code, _, err = download(site, tmp_path, "--symbols", "BTCUSDT", "--interval", "1h", "--from", "2023-03",
                            "--to", "2023-02")
    assert code == 64 and "before" in err
    assert site.requests == []


def fetcher(site: FakeSite, timeout_s: float = 5.0) -> tuple[httpx.Client, Fetcher]:
    client = httpx.Client(timeout=httpx.Timeout(timeout_s))
    return client, Fetcher(client, site.url, _Progress(1, enabled=False))


def test_partial_download_is_resumed_with_a_range_request(site: FakeSite, tmp_path: Path) -> None:
    """A ``.part`` left by a cut run holds the first bytes: the next asks for the rest (Range) and the
    joined file passes the checksum."""
    archive = Archive("BTCUSDT", "1h", "2024-01")
    body = site.publish(archive, month_csv("BTCUSDT", 2024, 1, header=False, base=100.0))
    part = tmp_path / (archive.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    client, fetch = fetcher(site)
    with client:
        assert fetch_archive(fetch, archive, tmp_path) == "downloaded"
    assert (tmp_path / archive.path).read_bytes() == body and not part.exists()
    assert ("/" + archive.path, "bytes=1000-") in site.requests


def test_a_corrupt_partial_download_is_fetched_again_whole(site: FakeSite, tmp_path: Path) -> None:
    """A resumed file that fails the check is fetched once more from the start before it is refused."""
    archive = Archive("BTCUSDT", "1h", "2024-01")
    body = site.publish(archive, month_csv("BTCUSDT", 2024, 1, header=False, base=100.0))
    part = tmp_path / (archive.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 10)
    client, fetch = fetcher(site)
    with client:
        assert fetch_archive(fetch, archive, tmp_path) == "downloaded"
    assert (tmp_path / archive.path).read_bytes() == body
    assert [r for r in site.requests if r[0].endswith(".zip")] == [("/" + archive.path, "bytes=70-"),
                                                                    ("/" + archive.path, "")]


def test_a_stalled_server_times_out(site: FakeSite, tmp_path: Path) -> None:
    """Every request has a timeout: a server that never answers is a DownloadError after the retries,
    not a hang."""
    archive = Archive("BTCUSDT", "1h", "2024-01")
    site.publish(archive, month_csv("BTCUSDT", 2024, 1, header=False, base=100.0))
    site.stalling = True
    client, fetch = fetcher(site, timeout_s=0.2)
    with client, pytest.raises(DownloadError, match="after 3 attempts"):
        fetch_archive(fetch, archive, tmp_path)
    assert len(site.requests) == 3
