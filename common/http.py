"""HTTP services: a FastAPI app under uvicorn in the service's own event loop, stopped with it.

The runner owns the signals (SIGTERM drains the service), so uvicorn's own handlers are switched off;
``/metrics`` is mounted on every app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import make_asgi_app


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the service runner handles SIGTERM/SIGINT

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


def with_metrics(app: FastAPI) -> FastAPI:
    """Mount Prometheus' ``/metrics`` on ``app`` (once)."""
    if not any(getattr(route, "path", "") == "/metrics" for route in app.routes):
        app.mount("/metrics", make_asgi_app())
    return app


async def serve(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` until ``stop`` is set; then finish the requests in flight and return."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name=f"http:{port}")
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        stopper.cancel()
        task.result()
        raise RuntimeError(f"the HTTP server on {host}:{port} stopped")
    server.should_exit = True
    await task
