"""The fake Binance server as a process, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal

import httpx
from pydantic import SecretStr

from common.config import BinanceSettings
from common.contracts.enums import Side
from common.exchange.binance import BinanceExchange
from common.exchange.errors import OrderRejected
from ops.redis_server import free_port
from tests.fakes.fake_binance import DEFAULT_API_KEY, DEFAULT_API_SECRET
from tests.integration.binance.support import ORDER, cid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# --- the fake as a process ------------------------------------------------------------------------------


def test_fake_runs_as_a_process_and_takes_faults_over_http() -> None:
    """`python -m tests.fakes.fake_binance --port N` serves the same API; /_fake/inject and
    /_fake/requests drive and inspect it from outside."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_binance", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(base + "/fapi/v1/ping", timeout=0.5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        httpx.post(base + "/_fake/inject", json={"path": ORDER, "method": "POST", "kind": "error", "code": -2019,
                                                 "msg": "Margin is insufficient."}).raise_for_status()

        async def main() -> int:
            exchange = BinanceExchange(BinanceSettings(
                api_key=SecretStr(DEFAULT_API_KEY), api_secret=SecretStr(DEFAULT_API_SECRET), base_url=base,
            ))
            await exchange.start()
            try:
                await exchange.place_market_order("BTCUSDT", Side.BUY, Decimal("0.002"), cid("t1"), reduce_only=False)
            except OrderRejected as e:
                return e.code
            finally:
                await exchange.close()
            return 0

        assert asyncio.run(main()) == -2019
        log = httpx.get(base + "/_fake/requests", params={"path": ORDER}).json()
        assert [(r["method"], r["status"], r["fault"]) for r in log] == [("POST", 400, "error")]
    finally:
        proc.terminate()
        proc.wait(10)
