"""structlog set-up: one JSON object per line on stdout, unbuffered, for journald.

Every line has ``service``, ``event``, ``level`` and ``ts`` (epoch ms); ``trace_id``, ``plan_id`` and
``symbol`` are bound per message with :func:`bound` (contextvars). Secrets never reach a line: values of
keys that look secret are masked, and ``SecretStr`` prints as stars anyway.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from pydantic import SecretStr

from common.contracts.base import now_ms

_SECRET_MARKERS = ("secret", "password", "api_key", "apikey", "token", "signature")
MASK = "***"


def _add_ts(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = now_ms()
    return event


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        lowered = key.lower()
        if isinstance(value, SecretStr) or any(marker in lowered for marker in _SECRET_MARKERS):
            event[key] = MASK
    return event


def _stringify(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            event[key] = str(value)
    return event


def configure_logging(service: str, *, level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines on ``stream`` (stdout), flushed per line, with ``service`` on every line."""
    out = stream or sys.stdout
    if out is sys.stdout and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_ts,
            structlog.processors.format_exc_info,
            _mask_secrets,
            _stringify,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind ``trace_id``, ``plan_id``, ``symbol`` (or any field) to every line inside the block."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in fields.items() if v is not None}):
        yield


def get_logger(**initial: Any) -> Any:
    return structlog.get_logger(**initial)
