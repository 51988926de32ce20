"""Exchange errors, judged once at the boundary. Each says what the caller must do."""

from __future__ import annotations

from common.contracts.reasons import exchange_reason


class ExchangeError(Exception):
    """Base of every error an exchange adapter raises; vendor errors are translated with ``from e``."""


class TemporaryError(ExchangeError):
    """The request did not take effect and may be retried with the same client id (timeouts before the
    send, 5xx other than an unknown outcome, 429/418, -1021 after a time resync, -1003, -1008).
    Usually resolves itself; ``retry_after_s`` is the exchange's Retry-After when it gave one."""

    def __init__(self, message: str, *, code: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


class UnknownOutcome(ExchangeError):
    """The order may or may not have been placed (timeout after the send, 503 "unknown error").
    Never resubmit blindly: settle it by querying the order by its client id."""


class FillsIncomplete(UnknownOutcome):
    """The order is filled (or partly), but its trades are not all visible yet (their quantities do not add
    up to the executed quantity). Nothing is booked short: the plan stays SUBMITTING and is settled later
    by querying the order again."""


#: Binance's "ReduceOnly Order is rejected": a reduce-only order with nothing to reduce
REDUCE_ONLY_REJECTED = -2022


class OrderRejected(ExchangeError):
    """A permanent rejection (-2019 margin, -4164 notional, -1111 precision, -2022 reduce-only, ...).
    Retrying will not help; the plan gets ``ERROR exchange:<code>``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def reason_code(self) -> str:
        return exchange_reason(self.code)


class DuplicateClientOrderId(OrderRejected):
    """-4116: an order with this client id exists already — the earlier send was placed. Look it up."""


class OrderNotFound(ExchangeError):
    """-2013 (or -2011 on cancel): no order with this id. For a SUBMITTING plan: safe to submit."""


class SymbolNotTradable(ExchangeError):
    """The exchange does not list the symbol as trading (the paper exchange: not in its rules file)."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"symbol not tradable: {symbol}")
        self.symbol = symbol
