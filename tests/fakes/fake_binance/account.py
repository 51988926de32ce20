"""The account: positions, balance, leverage, position mode and the trade list."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from common.contracts.base import plain_decimal
from tests.fakes.fake_binance.core import ZERO, BinanceError, FakeCore, bool_param, int_param, mandatory


class AccountMixin(FakeCore):
    """Positions (one-way rows), the USDT balance, leverage, the position mode, userTrades."""

    def set_position_mode(self, *, dual: bool) -> None:
        """Put the account in hedge mode (``dual``) or one-way mode, whatever it holds."""
        with self.lock:
            self.account.dual_side = dual

    def position_risk(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v3/positionRisk: only symbols with a position or open orders; no leverage or
        marginType (those are in symbolConfig).
        https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Position-Information-V3"""
        with self.lock:
            symbol = params.get("symbol")
            if symbol is not None:
                self._rules(symbol)
            out = []
            for s, p in self.account.positions.items():
                has_orders = any(a["symbol"] == s and a["algoStatus"] == "NEW" for a in self.account.algos.values())
                if (symbol is not None and s != symbol) or (p.amt == 0 and not has_orders):
                    continue
                mark = self.marks[s]
                lev = Decimal(self._leverage(s))
                notional = p.amt * mark
                margin = abs(notional) / lev
                liq = ZERO
                if p.amt != 0:
                    liq = max(ZERO, p.entry * (1 - Decimal(1) / lev) if p.amt > 0 else p.entry * (1 + Decimal(1) / lev))
                out.append({
                    "symbol": s,
                    "positionSide": "BOTH",
                    "positionAmt": plain_decimal(p.amt),
                    "entryPrice": plain_decimal(p.entry),
                    "breakEvenPrice": plain_decimal(p.entry),
                    "markPrice": plain_decimal(mark),
                    "unRealizedProfit": plain_decimal((mark - p.entry) * p.amt),
                    "liquidationPrice": plain_decimal(self.rules[s].round_price(liq)),
                    "isolatedMargin": "0",
                    "notional": plain_decimal(notional),
                    "marginAsset": "USDT",
                    "isolatedWallet": "0",
                    "initialMargin": plain_decimal(margin),
                    "maintMargin": plain_decimal(abs(notional) * Decimal("0.004")),
                    "positionInitialMargin": plain_decimal(margin),
                    "openOrderInitialMargin": "0",
                    "adl": 0,
                    "bidNotional": "0",
                    "askNotional": "0",
                    "updateTime": p.update_ms,
                })
            return out

    def symbol_config(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/symbolConfig.
        https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Symbol-Config"""
        with self.lock:
            symbol = params.get("symbol")
            symbols = [symbol] if symbol else list(self.rules)
            for s in symbols:
                self._rules(s)
            return [
                {
                    "symbol": s,
                    "marginType": "CROSSED",
                    "isAutoAddMargin": False,
                    "leverage": self._leverage(s),
                    "maxNotionalValue": plain_decimal(self._max_notional(s)),
                }
                for s in symbols
            ]

    def _max_notional(self, symbol: str) -> Decimal:
        """The largest notional at the symbol's current leverage: the cap of the last bracket allowing it."""
        leverage = self._leverage(symbol)
        caps = [b.notional_cap for b in self.rules[symbol].leverage_brackets if b.initial_leverage >= leverage]
        return max(caps) if caps else ZERO

    def change_leverage(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/leverage: -4028 above the first bracket's initialLeverage.
        https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Change-Initial-Leverage"""
        with self.lock:
            symbol = params.get("symbol")
            rules = self._rules(symbol)
            assert symbol is not None
            raw = params.get("leverage", "")
            if not raw.isdigit():
                raise mandatory("leverage")
            leverage = int(raw)
            if not 1 <= leverage <= rules.max_leverage:
                raise BinanceError(-4028, f"Leverage {leverage} is not valid")
            self.account.leverage[symbol] = leverage
            return {"leverage": leverage, "maxNotionalValue": plain_decimal(self._max_notional(symbol)),
                    "symbol": symbol}

    def balances(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v3/balance (and v2).
        https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Futures-Account-Balance-V3"""
        with self.lock:
            unrealized = self._unrealized()
            available = self.account.wallet + unrealized - self._used_margin()
            wallet = plain_decimal(self.account.wallet)
            return [
                {
                    "accountAlias": "SgsR",
                    "asset": "USDT",
                    "balance": wallet,
                    "crossWalletBalance": wallet,
                    "crossUnPnl": plain_decimal(unrealized),
                    "availableBalance": plain_decimal(available),
                    "maxWithdrawAmount": plain_decimal(available),
                    "marginAvailable": True,
                    "updateTime": self.now_ms(),
                }
            ]

    def user_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/userTrades: ``symbol`` required; ``orderId``, ``startTime``/``endTime``, ``limit``
        (default 500, max 1000). A trade :meth:`delay_trades` hid is not listed yet.
        https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Account-Trade-List"""
        with self.lock:
            symbol = params.get("symbol")
            self._rules(symbol)
            start, end = int_param(params, "startTime"), int_param(params, "endTime")
            order_id = int_param(params, "orderId")
            limit = min(int_param(params, "limit") or 500, 1000)
            now = time.monotonic()
            rows = [
                dict(t)
                for t in self.account.trades
                if t["symbol"] == symbol
                and (start is None or t["time"] >= start)
                and (end is None or t["time"] <= end)
                and (order_id is None or t["orderId"] == order_id)
                and self.account.trade_visible_at.get(t["id"], 0.0) <= now
            ]
            return rows[:limit] if start is not None else rows[-limit:]

    def get_position_mode(self, params: dict[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/positionSide/dual.
        https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api/Get-Current-Position-Mode"""
        with self.lock:
            return {"dualSidePosition": self.account.dual_side}

    def change_position_mode(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/positionSide/dual: -4059 no change, -4067 open orders, -4068 a position.
        https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Change-Position-Mode"""
        with self.lock:
            if "dualSidePosition" not in params:
                raise mandatory("dualSidePosition")
            dual = bool_param(params, "dualSidePosition")
            if dual == self.account.dual_side:
                raise BinanceError(-4059, "No need to change position side.")
            if any(a["algoStatus"] == "NEW" for a in self.account.algos.values()) or any(
                o["status"] in ("NEW", "PARTIALLY_FILLED") for o in self.account.orders.values()
            ):
                raise BinanceError(-4067, "Position side cannot be changed if there exists open orders.")
            if any(p.amt != 0 for p in self.account.positions.values()):
                raise BinanceError(-4068, "Position side cannot be changed if there exists position.")
            self.account.dual_side = dual
            return {"code": 200, "msg": "success"}
