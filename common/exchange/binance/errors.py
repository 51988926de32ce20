"""Binance USD-M errors judged once: python-binance's exceptions and aiohttp's transport errors become
:mod:`common.exchange.errors`.

``mutation`` says whether the request could have changed something on the exchange (a new or cancelled
order, a leverage change). Only then is an ambiguous failure an :class:`UnknownOutcome`; for a read,
the same failure is merely a :class:`TemporaryError`.

| Binance                                                  | read           | mutation           |
|----------------------------------------------------------|----------------|--------------------|
| HTTP 429 / 418, -1003 (Retry-After kept)                 | TemporaryError | TemporaryError     |
| -1008 (server busy), -1021*                              | TemporaryError | TemporaryError     |
| HTTP 503 "Unknown error ...", -1000, -1006, -1007, -1001 | TemporaryError | UnknownOutcome     |
| other HTTP 5xx (502, 504, 503 "Service Unavailable")     | TemporaryError | UnknownOutcome     |
| -4116 duplicate client order id                          | DuplicateClientOrderId              |
| -2013 order does not exist, -2011 unknown order (cancel) | OrderNotFound                       |
| anything else (-1111, -1121, -2019, -2022, -4164, ...)   | OrderRejected(code)                 |
| connection refused / connect timeout (nothing sent)      | TemporaryError | TemporaryError     |
| read timeout, connection dropped, unreadable answer      | TemporaryError | UnknownOutcome     |

(*) -1021 reaches here only after the client has re-synced its clock and tried once more.
"""

from __future__ import annotations

import asyncio
from typing import Final

import aiohttp
from binance.exceptions import BinanceAPIException, BinanceRequestException

from common.exchange.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    OrderNotFound,
    OrderRejected,
    TemporaryError,
    UnknownOutcome,
)

TIMESTAMP_OUTSIDE_RECV_WINDOW: Final = -1021
#: the execution status of these is unknown (Binance: "Execution status unknown")
UNKNOWN_OUTCOME_CODES: Final = frozenset({-1000, -1006, -1007})
#: rejected before any effect; retry with the same client id after a pause
TEMPORARY_CODES: Final = frozenset({-1001, -1003, -1008, TIMESTAMP_OUTSIDE_RECV_WINDOW})
NOT_FOUND_CODES: Final = frozenset({-2011, -2013})
#: rejected outright (overload, rate limit, clock): no effect even on a 5xx answer
REJECTED_UNDER_LOAD: Final = frozenset({-1003, -1008, TIMESTAMP_OUTSIDE_RECV_WINDOW})
DUPLICATE_CLIENT_ID: Final = -4116
UNKNOWN_ERROR_MSG: Final = "unknown error"


def retry_after_s(e: BinanceAPIException) -> float | None:
    """The Retry-After header of the answer, in seconds, when there is one."""
    headers = getattr(e.response, "headers", None)
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def translate_api_error(e: BinanceAPIException, *, mutation: bool) -> ExchangeError:
    """An HTTP error answer (``BinanceAPIException``) as one of our errors."""
    code = int(e.code or 0)
    status = int(e.status_code or 0)
    message = str(e.message or "")
    label = f"{code or status}: {message}"
    if status in (418, 429) or code == -1003:
        return TemporaryError(f"rate limited ({label})", code=code or -1003, retry_after_s=retry_after_s(e))
    if code == DUPLICATE_CLIENT_ID:
        return DuplicateClientOrderId(code, message)
    if code in NOT_FOUND_CODES:
        return OrderNotFound(label)
    # Binance: a 5xx means the execution status is unknown; for an order that is an unknown outcome
    # (settled by querying), never a plain retry — client ids are unique only among open orders
    unknown = (code in UNKNOWN_OUTCOME_CODES or (status == 503 and UNKNOWN_ERROR_MSG in message.lower())
               or (mutation and (status >= 500 or code == -1001) and code not in REJECTED_UNDER_LOAD))
    if unknown:
        if mutation:
            return UnknownOutcome(f"execution status unknown ({label})")
        return TemporaryError(f"server error ({label})", code=code or None, retry_after_s=retry_after_s(e))
    if code in TEMPORARY_CODES or status >= 500:
        return TemporaryError(f"temporary failure ({label})", code=code or None, retry_after_s=retry_after_s(e))
    return OrderRejected(code, message or f"HTTP {status}")


def _nothing_sent(e: BaseException) -> bool:
    """True when the failure happened while connecting: the request never left this machine."""
    return isinstance(e, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))


def translate_transport_error(e: BaseException, *, mutation: bool) -> ExchangeError:
    """A timeout, a dropped connection or an unreadable answer as one of our errors."""
    kind = type(e).__name__
    if _nothing_sent(e) or not mutation:
        return TemporaryError(f"transport failure before an answer ({kind}: {e})")
    if isinstance(e, (asyncio.TimeoutError, aiohttp.ClientError, BinanceRequestException)):
        return UnknownOutcome(f"no answer after the request was sent ({kind}: {e})")
    return UnknownOutcome(f"unexpected transport failure ({kind}: {e})")


#: what the adapter catches around every python-binance call besides BinanceAPIException
TRANSPORT_ERRORS: Final = (aiohttp.ClientError, asyncio.TimeoutError, BinanceRequestException)
