"""The user data stream: listen keys, websocket subscribers, and the events the account sends.

Event builders follow, field for field:

- ORDER_TRADE_UPDATE: https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-Order-Update
- ALGO_UPDATE: https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-Algo-Order-Update
- listenKeyExpired: https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Event-User-Data-Stream-Expired
- listen keys: https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams/Start-User-Data-Stream
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from common.contracts.base import plain_decimal
from tests.fakes.fake_binance.core import BinanceError, FakeCore, Subscriber

#: algo statuses after which ALGO_UPDATE carries the matching-engine fields (``ap``, ``aq``, ``act``:
#: "only display when order is triggered and placed in matching engine"; a real TRIGGERED capture,
#: nautilus_trader#3287, has them; a real NEW capture has none)
PLACED_IN_ENGINE = ("TRIGGERED", "FINISHED")


class UserStreamMixin(FakeCore):
    """Listen keys and what the websocket of one pushes."""

    listen_key: str | None
    listen_keys_issued: int
    keepalives: int
    ws_enabled: bool
    ws_messages_sent: int

    def _reset_user_stream(self) -> None:
        self.listen_key = None
        self.listen_keys_issued = 0
        self.keepalives = 0
        self.ws_enabled = True
        self.ws_messages_sent = 0

    # --- test controls ---------------------------------------------------------------------------

    def expire_listen_key(self) -> None:
        """Binance expires a key that was not kept alive: the stream says so and the key is gone."""
        with self.lock:
            key = self.listen_key
            self.listen_key = None
        if key:
            self._publish(json.dumps({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": key}), key)
            for sub in self._subs(key):
                sub.push(None)

    def set_ws_enabled(self, enabled: bool) -> None:
        """Disabled: open user-stream connections are dropped and new ones refused."""
        with self.lock:
            self.ws_enabled = enabled
        if not enabled:
            self.disconnect_websockets()

    def disconnect_websockets(self) -> None:
        for sub in self._subs(None):
            sub.push(None)

    @property
    def ws_connections(self) -> int:
        with self.lock:
            return len(self._subscribers)

    # --- listen key endpoints --------------------------------------------------------------------

    def new_listen_key(self) -> dict[str, Any]:
        with self.lock:
            if self.listen_key is None:
                self.listen_key = f"fakeListenKey{next(self._seq):04d}" + "x" * 44
                self.listen_keys_issued += 1
            return {"listenKey": self.listen_key}

    def keepalive_listen_key(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            if self.listen_key is None or params.get("listenKey") not in (None, self.listen_key):
                raise BinanceError(-1125, "This listenKey does not exist.")
            self.keepalives += 1
            return {"listenKey": self.listen_key}

    def close_listen_key(self, params: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            key = self.listen_key
            self.listen_key = None
        if key:
            for sub in self._subs(key):
                sub.push(None)
        return {}

    # --- websocket subscribers -------------------------------------------------------------------

    def subscribe(self, listen_key: str, loop: asyncio.AbstractEventLoop) -> Subscriber:
        with self.lock:
            if not self.ws_enabled or listen_key != self.listen_key:
                raise BinanceError(-1125, "This listenKey does not exist.")
            sub = Subscriber(listen_key, loop, asyncio.Queue())
            self._subscribers.append(sub)
            return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self.lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def _subs(self, listen_key: str | None) -> list[Subscriber]:
        with self.lock:
            return [s for s in self._subscribers if listen_key is None or s.listen_key == listen_key]

    def _publish(self, message: str, listen_key: str | None = None) -> None:
        key = listen_key or self.listen_key
        if key is None:
            return
        for sub in self._subs(key):
            sub.push(message)
            self.ws_messages_sent += 1

    # --- events ----------------------------------------------------------------------------------

    def _publish_order_update(
        self,
        order: dict[str, Any],
        trade: dict[str, Any] | None,
        *,
        execution: str = "TRADE",
        status: str | None = None,
        order_type: str | None = None,
    ) -> None:
        """One ORDER_TRADE_UPDATE for ``order`` (with ``trade``: the fill it reports). ``AP``/``cr`` are
        left out (trailing stops only)."""
        now = self.now_ms()
        filled = self._filled_through(order, trade)
        if status is None:
            status = "FILLED" if filled == Decimal(order["origQty"]) else "PARTIALLY_FILLED"
        o = {
            "s": order["symbol"],
            "c": order["clientOrderId"],
            "S": order["side"],
            "o": order_type or order["type"],
            "f": order["timeInForce"],
            "q": order["origQty"],
            "p": order["price"],
            "ap": order["avgPrice"] if trade else "0",
            "sp": order["stopPrice"],
            "x": execution,
            "X": status,
            "i": order["orderId"],
            "l": trade["qty"] if trade else "0",
            "z": plain_decimal(filled),
            "L": trade["price"] if trade else "0",
            "N": trade["commissionAsset"] if trade else "USDT",
            "n": trade["commission"] if trade else "0",
            "T": trade["time"] if trade else now,
            "t": trade["id"] if trade else 0,
            "b": "0",
            "a": "0",
            "m": False,
            "R": order["reduceOnly"],
            "wt": order["workingType"],
            "ot": order_type or order["origType"],
            "ps": order["positionSide"],
            "cp": order["closePosition"],
            "pP": False,
            "si": 0,
            "ss": 0,
            "rp": trade["realizedPnl"] if trade else "0",
            "V": order["selfTradePreventionMode"],
            "pm": order["priceMatch"],
            "gtd": order["goodTillDate"],
            "er": "0",
        }
        self._publish(json.dumps({"e": "ORDER_TRADE_UPDATE", "E": now, "T": o["T"], "o": o}, ensure_ascii=False))

    def _filled_through(self, order: dict[str, Any], trade: dict[str, Any] | None) -> Decimal:
        if trade is None:
            return Decimal(0)
        mine = (t for t in self.account.trades if t["orderId"] == order["orderId"] and t["id"] <= trade["id"])
        return sum((Decimal(t["qty"]) for t in mine), Decimal(0))

    def _publish_algo_update(self, algo: dict[str, Any]) -> None:
        """One ALGO_UPDATE for ``algo`` in its current state; ``rm`` only with a failure reason."""
        now = self.now_ms()
        o: dict[str, Any] = {
            "caid": algo["clientAlgoId"],
            "aid": algo["algoId"],
            "at": algo["algoType"],
            "o": algo["orderType"],
            "s": algo["symbol"],
            "S": algo["side"],
            "ps": algo["positionSide"],
            "f": algo["timeInForce"],
            "q": algo["quantity"],
            "X": algo["algoStatus"],
            "ai": algo["actualOrderId"],
        }
        if algo["algoStatus"] in PLACED_IN_ENGINE:
            finished = algo["algoStatus"] == "FINISHED"
            o.update(ap=algo["actualPrice"] if finished else "0", aq=algo["actualQty"] if finished else "0",
                     act=algo["actualType"])
        o.update({
            "tp": algo["triggerPrice"],
            "p": algo["price"],
            "V": algo["selfTradePreventionMode"],
            "wt": algo["workingType"],
            "pm": algo["priceMatch"],
            "cp": algo["closePosition"],
            "pP": algo["priceProtect"],
            "R": algo["reduceOnly"],
            "tt": algo["triggerTime"],
            "gtd": algo["goodTillDate"],
        })
        if algo.get("rm"):
            o["rm"] = algo["rm"]
        self._publish(json.dumps({"e": "ALGO_UPDATE", "T": now, "E": now, "o": o}, ensure_ascii=False))
