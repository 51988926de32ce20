"""Symbols and market data: exchangeInfo, leverage brackets, mark prices, klines."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

from common.contracts.base import plain_decimal
from common.exchange.rules import build_rules, parse_leverage_brackets
from tests.fakes.fake_binance.core import DEFAULT_MARKS, BinanceError, FakeCore


class MarketMixin(FakeCore):
    """Symbols (from the paper exchange's rules file, plus what a test lists) and their prices."""

    def _load_symbols(self) -> None:
        data = json.loads(self.symbols_file.read_text(encoding="utf-8"))
        brackets = data.pop("leverageBracket", [])
        data.pop("_comment", None)  # ours, not Binance's
        self.exchange_info = data
        self.brackets = {b["symbol"]: b for b in brackets}
        self._rebuild_rules()
        self.marks = {s: DEFAULT_MARKS.get(s, Decimal(1)) for s in self.rules}

    def _rebuild_rules(self) -> None:
        # every listed symbol, whatever its contract type: choosing among them is the adapter's job
        self.rules = build_rules(self.exchange_info, parse_leverage_brackets(list(self.brackets.values()))).rules

    def add_symbol(
        self,
        symbol: str,
        *,
        like: str = "ETHUSDT",
        contract_type: str = "PERPETUAL",
        with_brackets: bool = True,
        mark: Decimal | str | None = None,
    ) -> None:
        """List one more symbol, a copy of ``like``'s rules under another name and contract type
        (e.g. ``TRADIFI_PERPETUAL``), with or without leverage brackets."""
        with self.lock:
            template = next(e for e in self.exchange_info["symbols"] if e["symbol"] == like)
            entry = copy.deepcopy(template)
            base = symbol.removesuffix("USDT")
            entry.update(symbol=symbol, pair=symbol, baseAsset=base, contractType=contract_type)
            self.exchange_info["symbols"].append(entry)
            if with_brackets:
                self.brackets[symbol] = {**copy.deepcopy(self.brackets[like]), "symbol": symbol}
            self._rebuild_rules()
            self.marks[symbol] = Decimal(mark) if mark is not None else DEFAULT_MARKS.get(symbol, self.marks[like])

    def set_mark_price(self, symbol: str, price: Decimal | str) -> None:
        """Move the mark price; conditional orders it crosses trigger and fill at it."""
        with self.lock:
            self.marks[symbol] = Decimal(price)
            self._check_triggers(symbol)

    def set_klines(self, symbol: str, interval: str, rows: list[list[Any]]) -> None:
        with self.lock:
            self.klines[(symbol, interval)] = rows

    # --- endpoints -------------------------------------------------------------------------------

    def exchange_information(self, params: dict[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/exchangeInfo — no ``maxLeverage`` anywhere (Binance has none: it is in the brackets).
        https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Exchange-Information"""
        with self.lock:
            return {**copy.deepcopy(self.exchange_info), "serverTime": self.now_ms()}

    def leverage_bracket(self, params: dict[str, str]) -> Any:
        """GET /fapi/v1/leverageBracket (signed): a list, or one object when ``symbol`` is sent (as the
        docs show; whether the live API wraps it in a list was not checked).
        https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Notional-and-Leverage-Brackets"""
        with self.lock:
            symbol = params.get("symbol")
            if symbol is None:
                return [copy.deepcopy(b) for b in self.brackets.values()]
            self._rules(symbol)
            if symbol not in self.brackets:
                raise BinanceError(-1121, "Invalid symbol.")
            return copy.deepcopy(self.brackets[symbol])

    def premium_index(self, params: dict[str, str]) -> Any:
        """GET /fapi/v1/premiumIndex (the mark price).
        https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Mark-Price"""
        with self.lock:
            symbol = params.get("symbol")
            if symbol is None:
                return [self._premium(s) for s in self.rules]
            self._rules(symbol)
            return self._premium(symbol)

    def _premium(self, symbol: str) -> dict[str, Any]:
        mark = plain_decimal(self.marks[symbol])
        now = self.now_ms()
        return {
            "symbol": symbol,
            "markPrice": mark,
            "indexPrice": mark,
            "estimatedSettlePrice": mark,
            "lastFundingRate": "0.00010000",
            "interestRate": "0.00010000",
            "nextFundingTime": (now // 28_800_000 + 1) * 28_800_000,
            "time": now,
        }

    def klines_for(self, params: dict[str, str]) -> list[list[Any]]:
        """GET /fapi/v1/klines.
        https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data"""
        with self.lock:
            symbol = params.get("symbol")
            self._rules(symbol)
            assert symbol is not None
            interval = params.get("interval", "1m")
            limit = min(int(params.get("limit", "500")), 1500)
            rows = self.klines.get((symbol, interval))
            if rows is not None:
                return rows[-limit:]
            return self._generated_klines(symbol, interval, limit)

    def _generated_klines(self, symbol: str, interval: str, limit: int) -> list[list[Any]]:
        """A deterministic zig-zag around the mark price, ending at the current candle."""
        units = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
        step_ms = int(interval[:-1] or 1) * units.get(interval[-1], 60_000)
        rules = self.rules[symbol]
        mark = self.marks[symbol]
        last_open = self.now_ms() // step_ms * step_ms
        rows: list[list[Any]] = []
        for i in range(limit):
            open_time = last_open - (limit - 1 - i) * step_ms
            wiggle = Decimal((open_time // step_ms) % 7 - 3) / Decimal(1000)
            close = rules.round_price(mark * (1 + wiggle))
            open_ = rules.round_price(mark * (1 - wiggle / 2))
            high = max(open_, close) + rules.tick_size
            low = min(open_, close) - rules.tick_size
            rows.append([
                open_time, plain_decimal(open_), plain_decimal(high), plain_decimal(low), plain_decimal(close),
                "100", open_time + step_ms - 1, plain_decimal(close * 100), 10, "50",
                plain_decimal(close * 50), "0",
            ])
        return rows
