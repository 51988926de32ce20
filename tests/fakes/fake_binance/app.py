"""The HTTP and websocket face of :class:`FakeBinance`: Binance USD-M paths, auth and faults.

Every ``/fapi`` request goes through :func:`_serve`: it is logged, authenticated (``X-MBX-APIKEY``,
HMAC-SHA256 of the raw parameters, timestamp within ``recvWindow``), then the fault plan is applied,
then the handler runs. ``/_fake/*`` lets a test drive a fake running in another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from decimal import Decimal
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from tests.fakes.fake_binance.state import (
    UNKNOWN_ERROR_MSG,
    BinanceError,
    FakeBinance,
    Fault,
    Handler,
    LoggedRequest,
)

SIGNATURE_RE = re.compile(r"(^|&)signature=([^&]*)")


class Security(Enum):
    NONE = "NONE"
    USER_STREAM = "USER_STREAM"  # API key only
    SIGNED = "SIGNED"  # API key + signature + timestamp


def _error(e: BinanceError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": e.code, "msg": e.msg}, status_code=e.status, headers=headers)


def _split_signature(raw: str) -> tuple[str, str | None]:
    match = SIGNATURE_RE.search(raw)
    if match is None:
        return raw, None
    return raw[: match.start()] + raw[match.end() :], match.group(2)


def _authenticate(fake: FakeBinance, request: Request, query: str, body: str, security: Security) -> None:
    if security is Security.NONE:
        return
    key = request.headers.get("X-MBX-APIKEY")
    if not key:
        raise BinanceError(-2014, "API-key format invalid.", 401)
    if key != fake.api_key:
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    if security is Security.USER_STREAM:
        return
    query_payload, query_sig = _split_signature(query)
    body_payload, body_sig = _split_signature(body)
    signature = query_sig or body_sig
    if signature is None:
        raise BinanceError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    # Binance signs totalParams: the query string followed by the body, as sent (percent-encoded).
    payload = query_payload + body_payload
    expected = hmac.new(fake.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise BinanceError(-1022, "Signature for this request is not valid.")


def _fault_response(fault: Fault) -> Response:
    if fault.kind == "rate_limit":
        status = fault.status or 429
        msg = fault.msg or (
            "Way too many requests; IP banned until later."
            if status == 418
            else "Too many requests; current limit of IP is 2400 requests per minute."
        )
        return JSONResponse(
            {"code": -1003, "msg": msg}, status_code=status, headers={"Retry-After": str(fault.retry_after_s)}
        )
    if fault.kind == "unknown":
        return JSONResponse({"code": fault.code or -1000, "msg": fault.msg or UNKNOWN_ERROR_MSG}, status_code=503)
    if fault.kind == "status":
        status = fault.status or 500
        if fault.code is None:
            return Response(fault.msg or "<html><body>Bad Gateway</body></html>", status_code=status)
        return JSONResponse({"code": fault.code, "msg": fault.msg or "Internal error."}, status_code=status)
    # error
    return JSONResponse(
        {"code": fault.code if fault.code is not None else -1000, "msg": fault.msg or "An unknown error occurred."},
        status_code=fault.status or 400,
    )


async def _serve(
    fake: FakeBinance, request: Request, handler: Handler, security: Security = Security.SIGNED
) -> Response:
    query = request.url.query
    body = (await request.body()).decode("utf-8")
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(parse_qsl(body, keep_blank_values=True))
    params.pop("signature", None)
    entry = LoggedRequest(
        method=request.method,
        path=request.url.path,
        params=params,
        at_s=time.monotonic(),
        api_key=request.headers.get("X-MBX-APIKEY"),
    )
    with fake.lock:
        fake.log.append(entry)
    response = await _answer(fake, request, handler, security, query, body, params, entry)
    entry.status = response.status_code
    return response


async def _answer(
    fake: FakeBinance,
    request: Request,
    handler: Handler,
    security: Security,
    query: str,
    body: str,
    params: dict[str, str],
    entry: LoggedRequest,
) -> Response:
    try:
        _authenticate(fake, request, query, body, security)
        if security is Security.SIGNED:
            fake.check_timestamp(params)
    except BinanceError as e:
        return _error(e)
    fault = fake.take_fault(request.url.path, request.method)
    if fault is not None:
        entry.fault = fault.kind
    if fault is not None and fault.kind == "latency":
        await asyncio.sleep(fault.delay_s)
        fault = None
    if fault is not None and not fault.execute:
        if fault.kind == "timeout":
            await asyncio.sleep(fault.hold_s)
            return _error(BinanceError(-1007, "Timeout waiting for response from backend server.", 408))
        return _fault_response(fault)
    try:
        result = handler(params)
    except BinanceError as e:
        return _error(e)
    if fault is not None:  # executed: now fail the answer
        if fault.kind == "timeout":
            await asyncio.sleep(fault.hold_s)
        else:
            return _fault_response(fault)
    return JSONResponse(result)


def _decimal_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def create_app(fake: FakeBinance) -> FastAPI:
    """The fake server's app over ``fake``."""
    app = FastAPI(title="fake-binance-usdm")
    app.state.fake = fake

    def route(path: str, methods: list[str], handler: Handler, security: Security = Security.SIGNED) -> None:
        async def endpoint(request: Request) -> Response:
            return await _serve(fake, request, handler, security)

        endpoint.__name__ = f"{methods[0].lower()}_{path.strip('/').replace('/', '_')}"
        app.add_api_route(path, endpoint, methods=methods)

    # market data (each handler names its Binance page; these two are one-liners:
    # https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Test-Connectivity
    # https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Check-Server-Time)
    route("/fapi/v1/ping", ["GET"], lambda p: {}, Security.NONE)
    route("/fapi/v1/time", ["GET"], lambda p: {"serverTime": fake.now_ms()}, Security.NONE)
    route("/fapi/v1/exchangeInfo", ["GET"], fake.exchange_information, Security.NONE)
    route("/fapi/v1/premiumIndex", ["GET"], fake.premium_index, Security.NONE)
    route("/fapi/v1/klines", ["GET"], fake.klines_for, Security.NONE)
    # orders
    route("/fapi/v1/order", ["POST"], fake.new_order)
    route("/fapi/v1/order", ["GET"], fake.get_order)
    route("/fapi/v1/order", ["DELETE"], fake.cancel_order)
    route("/fapi/v1/openOrders", ["GET"], fake.open_orders)
    route("/fapi/v1/algoOrder", ["POST"], fake.new_algo)
    route("/fapi/v1/algoOrder", ["GET"], fake.get_algo)
    route("/fapi/v1/algoOrder", ["DELETE"], fake.cancel_algo)
    route("/fapi/v1/openAlgoOrders", ["GET"], fake.open_algos)
    route("/fapi/v1/allAlgoOrders", ["GET"], fake.all_algos)
    # account
    route("/fapi/v3/positionRisk", ["GET"], fake.position_risk)
    route("/fapi/v1/symbolConfig", ["GET"], fake.symbol_config)
    route("/fapi/v1/leverage", ["POST"], fake.change_leverage)
    route("/fapi/v3/balance", ["GET"], fake.balances)
    route("/fapi/v2/balance", ["GET"], fake.balances)
    route("/fapi/v1/userTrades", ["GET"], fake.user_trades)
    route("/fapi/v1/leverageBracket", ["GET"], fake.leverage_bracket)
    route("/fapi/v1/positionSide/dual", ["GET"], fake.get_position_mode)
    route("/fapi/v1/positionSide/dual", ["POST"], fake.change_position_mode)
    # user data stream (user_stream.py)
    route("/fapi/v1/listenKey", ["POST"], lambda p: fake.new_listen_key(), Security.USER_STREAM)
    route("/fapi/v1/listenKey", ["PUT"], fake.keepalive_listen_key, Security.USER_STREAM)
    route("/fapi/v1/listenKey", ["DELETE"], fake.close_listen_key, Security.USER_STREAM)

    async def user_stream(websocket: WebSocket, listen_key: str) -> None:
        try:
            sub = fake.subscribe(listen_key, asyncio.get_running_loop())
        except BinanceError:
            await websocket.close(code=1008)
            return
        await websocket.accept()
        try:
            while True:
                message = await sub.queue.get()
                if message is None:
                    break
                await websocket.send_text(message)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            fake.unsubscribe(sub)
            try:
                await websocket.close()
            except (WebSocketDisconnect, RuntimeError):  # already closed by the peer
                pass

    app.add_api_websocket_route("/ws/{listen_key}", user_stream)
    app.add_api_websocket_route("/private/ws/{listen_key}", user_stream)

    # test controls for a fake in another process
    @app.post("/_fake/inject")
    async def inject(request: Request) -> JSONResponse:
        spec = await request.json()
        fault = fake.inject(**spec)
        return JSONResponse({"injected": fault.kind, "times": fault.times})

    @app.post("/_fake/mark_price")
    async def mark_price(request: Request) -> JSONResponse:
        spec = await request.json()
        fake.set_mark_price(spec["symbol"], Decimal(str(spec["price"])))
        return JSONResponse({})

    @app.post("/_fake/clock")
    async def clock(request: Request) -> JSONResponse:
        fake.set_clock_offset_ms(int((await request.json())["offset_ms"]))
        return JSONResponse({})

    @app.post("/_fake/liquidate")
    async def liquidate(request: Request) -> JSONResponse:
        spec = await request.json()
        order = fake.liquidate(spec["symbol"], Decimal(str(spec["price"])) if spec.get("price") else None)
        return JSONResponse(json.loads(json.dumps(order, default=_decimal_default)))

    @app.post("/_fake/algo")
    async def algo_end(request: Request) -> JSONResponse:
        """``{"client_algo_id", "end": "REJECTED"|"EXPIRED", "reason"}``: the exchange ends an algo order."""
        spec = await request.json()
        if spec["end"] == "REJECTED":
            algo = fake.reject_algo(spec["client_algo_id"], spec.get("reason") or "Margin is insufficient.")
        else:
            algo = fake.expire_algo(spec["client_algo_id"], spec.get("reason") or "")
        return JSONResponse(json.loads(json.dumps(algo, default=_decimal_default)))

    @app.post("/_fake/position_mode")
    async def position_mode(request: Request) -> JSONResponse:
        fake.set_position_mode(dual=bool((await request.json())["dual"]))
        return JSONResponse({})

    @app.post("/_fake/ws")
    async def ws_switch(request: Request) -> JSONResponse:
        fake.set_ws_enabled(bool((await request.json())["enabled"]))
        return JSONResponse({})

    @app.post("/_fake/reset")
    async def reset() -> JSONResponse:
        fake.reset()
        return JSONResponse({})

    @app.get("/_fake/requests")
    async def requests_log(path: str | None = None, method: str | None = None) -> JSONResponse:
        return JSONResponse([r.to_json() for r in fake.requests(path, method)])

    @app.get("/_fake/orders")
    async def orders() -> JSONResponse:
        return JSONResponse({"orders": fake.orders(), "algo_orders": fake.algo_orders()})

    return app
