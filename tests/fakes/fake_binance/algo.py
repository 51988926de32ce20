"""Algo (conditional) orders: placement, queries, triggers on the mark price, and how they end.

Response builders follow, field for field:

- POST /fapi/v1/algoOrder: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/New-Algo-Order
- GET /fapi/v1/algoOrder: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Query-Algo-Order
- GET /fapi/v1/openAlgoOrders: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Current-All-Algo-Open-Orders
- GET /fapi/v1/allAlgoOrders: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Query-All-Algo-Orders
- DELETE /fapi/v1/algoOrder: https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/Cancel-Algo-Order

What the docs leave open, and what the fake does about it (each marked "not confirmed"):

- a second ``closePosition`` order of the same type and side while one rests: -4130 (public captures;
  -4130 is not on the error-code page); a closePosition TAKE_PROFIT_MARKET beside a closePosition
  STOP_MARKET is accepted (public testnet capture);
- closePosition orders show ``timeInForce`` ``GTE_GTC``, ``quantity`` "0" (public testnet capture of
  ALGO_UPDATE) and expire when the position is gone (the EXPIRED status's own example);
- quantity-based reduce-only orders stay open when the position is gone (not documented to expire);
  one that triggers with nothing to reduce ends CANCELED with ``rm`` "Reduce Only reject" (the docs'
  ALGO_UPDATE sample); one that triggers with a quantity above the position closes the position and no
  more (not confirmed from Binance docs: a Binance FAQ says reduce-only stop-market orders at or above
  the position size are not limited, a public project says Binance caps them at the position);
- the child order a trigger makes: a MARKET order (``act`` "MARKET", real capture) whose own
  ``clientOrderId`` is NOT the clientAlgoId (what it is could not be confirmed: a fresh id here, so
  that nothing may rely on it) and whose ``origType`` is MARKET (whether it keeps STOP_MARKET after the
  algo migration was not confirmed); it links to the algo order only through ``actualOrderId`` / ``ai``;
- a FINISHED order carries ``actualQty`` and ``actualType`` (real capture, JKorf/Binance.Net#1575)
  beyond the documented sample;
- GET /fapi/v1/algoOrder may answer -2013 for a completed order that allAlgoOrders still lists
  (nautilus_trader#4449 falls back to allAlgoOrders): :meth:`AlgoMixin.set_algo_query_retention_ms`
  and :meth:`AlgoMixin.hide_algo_from_query` make it so.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.contracts.base import plain_decimal
from tests.fakes.fake_binance.core import (
    DAY_MS,
    BinanceError,
    FakeCore,
    Position,
    bool_param,
    dec_param,
    int_param,
    reducing,
)

#: POST /fapi/v1/algoOrder's documented answer
NEW_ALGO_FIELDS = (
    "algoId", "clientAlgoId", "algoType", "orderType", "symbol", "side", "positionSide", "timeInForce", "quantity",
    "algoStatus", "triggerPrice", "price", "icebergQuantity", "selfTradePreventionMode", "workingType",
    "priceMatch", "closePosition", "priceProtect", "reduceOnly", "activatePrice", "callbackRate", "createTime",
    "updateTime", "triggerTime", "goodTillDate",
)
#: GET algoOrder / openAlgoOrders / allAlgoOrders: the documented answer
QUERY_ALGO_FIELDS = (
    "algoId", "clientAlgoId", "algoType", "orderType", "symbol", "side", "positionSide", "timeInForce", "quantity",
    "algoStatus", "actualOrderId", "actualPrice", "triggerPrice", "price", "icebergQuantity", "tpTriggerPrice",
    "tpPrice", "slTriggerPrice", "slPrice", "tpOrderType", "selfTradePreventionMode", "workingType", "priceMatch",
    "closePosition", "priceProtect", "reduceOnly", "createTime", "updateTime", "triggerTime", "goodTillDate",
)
#: what a triggered-and-filled (FINISHED) order adds (real capture, not in the docs' sample)
FINISHED_ALGO_FIELDS = ("actualQty", "actualType")
CLOSE_POSITION_EXISTS = "An open stop or take profit order with GTE and closePosition in the direction is existing."
#: the one ``rm`` text the docs show (ALGO_UPDATE sample, an algo order CANCELED this way)
REDUCE_ONLY_REJECT = "Reduce Only reject"
ALGO_HISTORY_MAX_WINDOW_MS = 7 * DAY_MS


class AlgoMixin(FakeCore):
    """Algo orders and their lifecycle: NEW → TRIGGERING → TRIGGERED → FINISHED, or CANCELED, EXPIRED,
    REJECTED."""

    algo_query_retention_ms: int | None
    child_fill_before_trigger_update: bool
    _hidden_algos: set[str]

    def _reset_algos(self) -> None:
        self.algo_query_retention_ms = None
        self.child_fill_before_trigger_update = False
        self._hidden_algos = set()

    # --- test controls ---------------------------------------------------------------------------

    def algo_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(a) for a in self.account.algos.values() if symbol is None or a["symbol"] == symbol]

    def set_algo_query_retention_ms(self, retention_ms: int | None) -> None:
        """GET /fapi/v1/algoOrder answers -2013 for a completed (not NEW) algo order last updated longer
        ago than this (None: never); allAlgoOrders still lists it."""
        with self.lock:
            self.algo_query_retention_ms = retention_ms

    def hide_algo_from_query(self, client_algo_id: str) -> None:
        """GET /fapi/v1/algoOrder answers -2013 for this order, whatever its state."""
        with self.lock:
            self._hidden_algos.add(client_algo_id)

    def reject_algo(self, client_algo_id: str, reason: str = "Margin is insufficient.") -> dict[str, Any]:
        """The order triggers and the matching engine refuses it: TRIGGERING, then REJECTED with ``rm``
        (the docs: "denied by the matching engine, such as in scenarios of margin check failures"; the
        ``rm`` texts for REJECTED are not documented — the default here is a guess)."""
        with self.lock:
            algo = self._open_algo(client_algo_id)
            now = self.now_ms()
            algo.update(algoStatus="TRIGGERING", triggerTime=now, updateTime=now)
            self._publish_algo_update(algo)
            self._end_algo(algo, "REJECTED", reason)
            return dict(algo)

    def expire_algo(self, client_algo_id: str, reason: str = "") -> dict[str, Any]:
        """The system cancels the order: EXPIRED, with ``rm`` when a reason is given (its texts for
        EXPIRED are not documented)."""
        with self.lock:
            algo = self._open_algo(client_algo_id)
            self._end_algo(algo, "EXPIRED", reason)
            return dict(algo)

    def _open_algo(self, client_algo_id: str) -> dict[str, Any]:
        algo_id = self.account.client_algo_ids.get(client_algo_id)
        algo = self.account.algos.get(algo_id) if algo_id is not None else None
        if algo is None or algo["algoStatus"] != "NEW":
            raise ValueError(f"no open algo order {client_algo_id}")
        return algo

    def _end_algo(self, algo: dict[str, Any], status: str, reason: str) -> None:
        algo.update(algoStatus=status, updateTime=self.now_ms(), rm=reason)
        self._publish_algo_update(algo)

    # --- endpoints -------------------------------------------------------------------------------

    def new_algo(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/algoOrder: CONDITIONAL STOP_MARKET / TAKE_PROFIT_MARKET on the mark price."""
        with self.lock:
            symbol = params.get("symbol")
            rules = self._rules(symbol)
            assert symbol is not None
            if params.get("algoType") != "CONDITIONAL":
                raise BinanceError(-1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
            order_type = params.get("type", "")
            if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise BinanceError(-1116, "Invalid orderType.")
            side = params.get("side")
            if side not in ("BUY", "SELL"):
                raise BinanceError(-1117, "Invalid side.")
            trigger = dec_param(params, "triggerPrice")
            assert trigger is not None
            if trigger <= 0 or not (trigger % rules.tick_size == 0):
                raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
            close_position = bool_param(params, "closePosition")
            reduce_only = bool_param(params, "reduceOnly")
            qty = dec_param(params, "quantity", required=not close_position)
            if close_position and (qty is not None or "reduceOnly" in params):
                raise BinanceError(-1106, "Parameter 'reduceOnly' sent when not required.")
            if self.account.dual_side and params.get("positionSide", "BOTH") not in ("LONG", "SHORT"):
                raise BinanceError(-4061, "Order's position side does not match user's setting.")
            if qty is not None:
                self._check_algo_qty(rules.step_size, rules.min_qty, rules.max_qty, qty)
            client_algo_id = params.get("clientAlgoId") or f"fake-algo-{next(self._seq)}"
            if client_algo_id in self.account.client_algo_ids:
                raise BinanceError(-4116, "ClientOrderId is duplicated.")
            if close_position and self._close_position_resting(symbol, side, order_type):
                raise BinanceError(-4130, CLOSE_POSITION_EXISTS)
            if self._crossed(order_type, side, trigger, self.marks[symbol]):
                raise BinanceError(-2021, "Order would immediately trigger.")
            now = self.now_ms()
            algo_id = next(self._algo_ids)
            algo: dict[str, Any] = {
                "algoId": algo_id,
                "clientAlgoId": client_algo_id,
                "algoType": "CONDITIONAL",
                "orderType": order_type,
                "symbol": symbol,
                "side": side,
                "positionSide": params.get("positionSide", "BOTH"),
                "timeInForce": params.get("timeInForce") or ("GTE_GTC" if close_position else "GTC"),
                "quantity": plain_decimal(qty) if qty is not None else "0",
                "algoStatus": "NEW",
                "actualOrderId": "",
                "actualPrice": "0.00000",
                "actualQty": "0",
                "actualType": "",
                "triggerPrice": plain_decimal(trigger),
                "price": "0",
                "icebergQuantity": None,
                "tpTriggerPrice": "0.000",
                "tpPrice": "0.000",
                "slTriggerPrice": "0.000",
                "slPrice": "0.000",
                "tpOrderType": "",
                "selfTradePreventionMode": "EXPIRE_MAKER",
                "workingType": params.get("workingType", "CONTRACT_PRICE"),
                "priceMatch": "NONE",
                "closePosition": close_position,
                "priceProtect": bool_param(params, "priceProtect"),
                "reduceOnly": reduce_only or close_position,
                "activatePrice": "",
                "callbackRate": "",
                "createTime": now,
                "updateTime": now,
                "triggerTime": 0,
                "goodTillDate": 0,
                "rm": "",
            }
            self.account.algos[algo_id] = algo
            self.account.client_algo_ids[client_algo_id] = algo_id
            self._publish_algo_update(algo)
            return {name: algo[name] for name in NEW_ALGO_FIELDS}

    def _check_algo_qty(self, step: Decimal, min_qty: Decimal, max_qty: Decimal, qty: Decimal) -> None:
        if qty <= 0:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if qty % step != 0:
            raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
        if qty < min_qty:
            raise BinanceError(-4003, "Quantity less than or equal to zero.")
        if qty > max_qty:
            raise BinanceError(-4005, "Quantity greater than max quantity.")

    def _close_position_resting(self, symbol: str, side: str, order_type: str) -> bool:
        """Binance keeps one closePosition order per type and direction: a second STOP_MARKET on the same
        side is refused, a TAKE_PROFIT_MARKET beside it is not (see the module docstring)."""
        return any(
            a["symbol"] == symbol and a["side"] == side and a["orderType"] == order_type and a["closePosition"]
            and a["algoStatus"] == "NEW"
            for a in self.account.algos.values()
        )

    @staticmethod
    def _crossed(order_type: str, side: str, trigger: Decimal, mark: Decimal) -> bool:
        # New-Algo-Order: STOP_MARKET BUY fires when the price >= trigger, SELL when <=; TAKE_PROFIT_MARKET
        # the other way round
        falls_to = (order_type == "STOP_MARKET") == (side == "SELL")
        return mark <= trigger if falls_to else mark >= trigger

    def _query_answer(self, algo: dict[str, Any]) -> dict[str, Any]:
        out = {name: algo[name] for name in QUERY_ALGO_FIELDS}
        if algo["algoStatus"] == "FINISHED":
            out.update({name: algo[name] for name in FINISHED_ALGO_FIELDS})
        return out

    def _find_algo(self, params: dict[str, str]) -> dict[str, Any]:
        algo_id: int | None = None
        if params.get("algoId"):
            algo_id = int(params["algoId"])
        elif params.get("clientAlgoId"):
            algo_id = self.account.client_algo_ids.get(params["clientAlgoId"])
        else:
            raise BinanceError(-1102, "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!")
        algo = self.account.algos.get(algo_id) if algo_id is not None else None
        if algo is None or not self._retained(algo):
            raise BinanceError(-2013, "Order does not exist.")
        return algo

    def _retained(self, algo: dict[str, Any]) -> bool:
        """Query-Algo-Order: not found are CANCELED/EXPIRED orders without a fill created over 3 days
        ago, and any order created over 90 days ago."""
        age = self.now_ms() - int(algo["createTime"])
        unfilled_end = algo["algoStatus"] in ("CANCELED", "EXPIRED") and not algo["actualOrderId"]
        return age <= 90 * DAY_MS and not (unfilled_end and age > 3 * DAY_MS)

    def get_algo(self, params: dict[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/algoOrder (by algoId or clientAlgoId; no symbol is documented)."""
        with self.lock:
            algo = self._find_algo(params)
            completed = algo["algoStatus"] != "NEW"
            retention = self.algo_query_retention_ms
            stale = completed and retention is not None and self.now_ms() - int(algo["updateTime"]) >= retention
            if stale or algo["clientAlgoId"] in self._hidden_algos:
                raise BinanceError(-2013, "Order does not exist.")
            return self._query_answer(algo)

    def cancel_algo(self, params: dict[str, str]) -> dict[str, Any]:
        """DELETE /fapi/v1/algoOrder: -2011 unless the order is NEW."""
        with self.lock:
            try:
                algo = self._find_algo(params)
            except BinanceError as e:
                if e.code == -2013:
                    raise BinanceError(-2011, "Unknown order sent.") from e
                raise
            if algo["algoStatus"] != "NEW":
                raise BinanceError(-2011, "Unknown order sent.")
            algo.update(algoStatus="CANCELED", updateTime=self.now_ms())
            self._publish_algo_update(algo)
            return {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"], "code": "200", "msg": "success"}

    def open_algos(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/openAlgoOrders (symbol optional)."""
        with self.lock:
            symbol = params.get("symbol")
            if symbol is not None:
                self._rules(symbol)
            return [
                self._query_answer(a)
                for a in self.account.algos.values()
                if a["algoStatus"] == "NEW" and (symbol is None or a["symbol"] == symbol)
            ]

    def all_algos(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/allAlgoOrders: ``symbol`` required; orders >= ``algoId`` when given, else the most
        recent; a window of less than 7 days (default the recent 7 days — which time it applies to is not
        documented: the creation time here); ``limit`` default 500, max 1000."""
        with self.lock:
            symbol = params.get("symbol")
            if not symbol:
                raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            self._rules(symbol)
            now = self.now_ms()
            start, end = int_param(params, "startTime"), int_param(params, "endTime")
            if start is None and end is None:
                start, end = now - ALGO_HISTORY_MAX_WINDOW_MS, now
            elif start is None:
                assert end is not None
                start = end - ALGO_HISTORY_MAX_WINDOW_MS
            elif end is None:
                end = min(now, start + ALGO_HISTORY_MAX_WINDOW_MS)
            if end - start > ALGO_HISTORY_MAX_WINDOW_MS:
                # the code Binance answers here is not documented; -1127 is its generic "interval too big"
                raise BinanceError(-1127, "More than 7 days between startTime and endTime.")
            from_id = int_param(params, "algoId")
            limit = min(int_param(params, "limit") or 500, 1000)
            rows = [
                a for a in sorted(self.account.algos.values(), key=lambda a: int(a["algoId"]))
                if a["symbol"] == symbol and start <= int(a["createTime"]) <= end and self._retained(a)
                and (from_id is None or int(a["algoId"]) >= from_id)
            ]
            rows = rows[:limit] if from_id is not None else rows[-limit:]
            return [self._query_answer(a) for a in rows]

    # --- triggers --------------------------------------------------------------------------------

    def _check_triggers(self, symbol: str) -> None:
        mark = self.marks[symbol]
        for algo in sorted(self.account.algos.values(), key=lambda a: int(a["algoId"])):
            if algo["symbol"] != symbol or algo["algoStatus"] != "NEW":
                continue
            if self._crossed(algo["orderType"], algo["side"], Decimal(algo["triggerPrice"]), mark):
                self._trigger(algo, mark)

    def _trigger(self, algo: dict[str, Any], mark: Decimal) -> None:
        symbol, side = algo["symbol"], algo["side"]
        now = self.now_ms()
        algo.update(algoStatus="TRIGGERING", triggerTime=now, updateTime=now)
        self._publish_algo_update(algo)
        pos = self.account.positions.get(symbol, Position())
        if not reducing(side, pos.amt):  # nothing left to reduce: the docs' sample, CANCELED "Reduce Only reject"
            self._end_algo(algo, "CANCELED", REDUCE_ONLY_REJECT)
            return
        # a quantity above the position closes the position and no more (not confirmed from Binance docs)
        qty = abs(pos.amt) if algo["closePosition"] else min(Decimal(algo["quantity"]), abs(pos.amt))
        child = self._new_order_record(symbol, side, qty, f"fake-child-{next(self._seq)}", "MARKET", reduce_only=True)
        child.update(workingType=algo["workingType"])
        algo.update(actualOrderId=str(child["orderId"]), actualType="MARKET")
        if not self.child_fill_before_trigger_update:
            algo.update(algoStatus="TRIGGERED", updateTime=self.now_ms())
            self._publish_algo_update(algo)
        self._publish_order_update(child, None, execution="NEW", status="NEW")
        for trade in self._fill(child, mark):
            self._publish_order_update(child, trade)
        if self.child_fill_before_trigger_update:  # seen in a public report (nautilus_trader#3664)
            algo.update(algoStatus="TRIGGERED", updateTime=self.now_ms())
            self._publish_algo_update(algo)
        algo.update(algoStatus="FINISHED", updateTime=self.now_ms(), actualPrice=child["avgPrice"],
                    actualQty=child["executedQty"])
        self._publish_algo_update(algo)
        self._position_changed(symbol)

    def _position_changed(self, symbol: str) -> None:
        """A position that is gone takes its closePosition (GTE_GTC) orders with it: EXPIRED. Quantity-based
        reduce-only orders stay (see the module docstring)."""
        pos = self.account.positions.get(symbol)
        if pos is not None and pos.amt != 0:
            return
        for algo in list(self.account.algos.values()):
            if algo["symbol"] == symbol and algo["algoStatus"] == "NEW" and algo["closePosition"]:
                self._end_algo(algo, "EXPIRED", "")
