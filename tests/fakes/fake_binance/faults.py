"""The fault plan and the request log: what a test injects, and what reached the fake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.fakes.fake_binance.core import FakeCore

FAULT_KINDS = ("latency", "timeout", "status", "rate_limit", "unknown", "error")


@dataclass
class Fault:
    """One injected failure, consumed by the next ``times`` matching requests.

    kinds: ``latency`` (delay, then normal), ``timeout`` (hold ``hold_s``; with ``execute`` the request
    takes effect first), ``status`` (HTTP ``status`` with a body), ``rate_limit`` (429/418 + Retry-After,
    -1003), ``unknown`` (503 "Unknown error"; with ``execute``, the default, the order WAS placed),
    ``error`` (any Binance ``code``/``msg`` with ``status``, default 400)."""

    path: str
    method: str
    kind: str
    times: int = 1
    delay_s: float = 0.0
    hold_s: float = 5.0
    status: int | None = None
    code: int | None = None
    msg: str | None = None
    retry_after_s: int = 1
    execute: bool = False


@dataclass
class LoggedRequest:
    """One request as it reached the fake (``at_s`` is ``time.monotonic()`` on arrival)."""

    method: str
    path: str
    params: dict[str, str]
    at_s: float
    api_key: str | None
    status: int = 0
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "params": self.params,
            "at_s": self.at_s,
            "api_key_present": self.api_key is not None,
            "status": self.status,
            "fault": self.fault,
        }


class FaultsMixin(FakeCore):
    """Fault injection and the request log."""

    faults: list[Fault]
    log: list[LoggedRequest]

    def _reset_faults(self) -> None:
        self.faults = []
        self.log = []

    def inject(self, path: str, method: str, kind: str, times: int = 1, **options: Any) -> Fault:
        """Make the next ``times`` requests to ``method path`` fail as ``kind`` (see :class:`Fault`)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if kind == "unknown":
            options.setdefault("execute", True)
        fault = Fault(path=path, method=method.upper(), kind=kind, times=times, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, path: str, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path == path and fault.method == method and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def requests(self, path: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        """The request log, optionally only one path and method."""
        with self.lock:
            return [
                r
                for r in self.log
                if (path is None or r.path == path) and (method is None or r.method == method.upper())
            ]
