"""The service runner: the one ``run(...)`` every ``services/<name>/__main__.py`` calls.

It loads the settings (exit 78 when wrong), sets up JSON logging, waits for Redis, lets the service
register its consumers and loops, creates the groups, tells systemd ``READY=1``, keeps a heartbeat key
with a TTL, sends ``WATCHDOG=1`` only while every loop makes progress, serves ``/metrics``, and on
SIGTERM finishes the batch in hand, says ``STOPPING=1`` and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from fastapi import FastAPI
from prometheus_client import start_http_server
from redis.asyncio import Redis

from common import keys, streams
from common.backoff import Backoff, pause
from common.bus.consumer import (
    Consumer,
    DeadCheck,
    DeadLetterHook,
    Guard,
    Handler,
    LaneKey,
    consumer_name,
    heartbeat_dead,
)
from common.bus.effects import Fence
from common.config import ConfigurationError, Settings, exit_config_error, settings_or_exit
from common.contracts.base import now_ms
from common.exchange.errors import ExchangeError, TemporaryError
from common.http import serve, with_metrics
from common.instance import ProcessIdentity
from common.logging import configure_logging
from common.redis_client import REDIS_DOWN, redis_client, wait_for_redis
from common.systemd import notify, watchdog_interval_s

log = structlog.get_logger()

Loop = Callable[["ServiceContext"], Coroutine[Any, Any, None]]
#: an exchange or Redis outage: a periodic round fails with it and the service carries on
OUTAGES: tuple[type[BaseException], ...] = (ExchangeError, *REDIS_DOWN)
Setup = Callable[["ServiceContext"], Awaitable[None]]


class ServiceContext:
    """What a service's setup receives: settings, Redis, the stop event, and registration of its
    consumers and loops."""

    def __init__(self, service: str, settings: Settings, redis: Redis, stop: asyncio.Event) -> None:
        self.service = service
        self.settings = settings
        self.redis = redis
        self.stop = stop
        self.instance = f"{settings.host}-{settings.instance}" if settings.instance else settings.host
        self.consumer_name = consumer_name(service, settings.host, settings.instance)
        self.consumers: list[Consumer] = []
        self.loops: dict[str, Loop] = {}
        self.progress: dict[str, float] = {}
        self.started_at = now_ms()
        self.cleanups: list[Callable[[], Awaitable[None]]] = []
        self.http_port: int | None = None

    def consume(self, stream: str, handler: Handler, *, lane: LaneKey | None = None,
                guard: Guard | None = None, dead: DeadCheck | None = None, fence: Fence | None = None,
                transient: tuple[type[BaseException], ...] = (),
                on_dead_letter: DeadLetterHook | None = None, batched: bool = False) -> Consumer:
        """Consume the registered ``stream`` through this service's group (see :class:`Consumer` for the
        options; ``batched`` only for a handler that reads nothing the effects of earlier entries write).
        Entries of a consumer known to be dead are claimed at once: by default one whose heartbeat is gone
        (``dead`` overrides)."""
        consumer = Consumer(self.redis, streams.get(stream), self.service, self.consumer_name, handler,
                            self.settings.bus, service=self.service, lane=lane, guard=guard,
                            dead=dead or heartbeat_dead(self.redis), fence=fence, transient=transient,
                            on_dead_letter=on_dead_letter, batched=batched)
        self.consumers.append(consumer)
        return consumer

    def loop(self, name: str, fn: Loop) -> None:
        """A supervised long-running coroutine. It must call :meth:`beat` regularly (the watchdog
        counts on it) and return once ``stop`` is set; an exception stops the service (exit 1)."""
        self.loops[name] = fn
        self.beat(name)

    def repeat(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        """A loop that runs ``step`` until the service stops (``step`` waits itself, e.g. a blocking
        read). A Redis outage is ridden out with capped backoff and jitter, never a crash."""

        async def loop(ctx: ServiceContext) -> None:
            backoff = Backoff(ctx.settings.bus.reconnect_initial_ms / 1000, ctx.settings.bus.reconnect_max_ms / 1000)
            failures = 0
            while not ctx.stop.is_set():
                ctx.beat(name)
                try:
                    await step()
                    failures = 0
                except REDIS_DOWN as e:
                    delay = backoff.delay_s(failures)
                    failures += 1
                    log.warning("redis_unavailable", loop=name, error=str(e) or type(e).__name__,
                                retry_in_s=round(delay, 3))
                    await ctx.wait(name, delay)

        self.loop(name, loop)

    async def until_done(self, name: str, step: Callable[[], Awaitable[object]], *,
                         passing: tuple[type[BaseException], ...] = OUTAGES) -> bool:
        """Run ``step`` until it succeeds (a start that needs the exchange and Redis): a ``passing``
        failure is waited out with capped backoff and jitter, beating meanwhile. False when the service
        was stopped first."""
        backoff = Backoff(self.settings.bus.reconnect_initial_ms / 1000, self.settings.bus.reconnect_max_ms / 1000)
        failures = 0
        while not self.stop.is_set():
            try:
                await step()
                return True
            except passing as e:
                delay = backoff.delay_s(failures)
                failures += 1
                log.warning("waiting", step=name, error=str(e) or type(e).__name__, retry_in_s=round(delay, 3))
                if await self.wait(name, delay):
                    break
        return False

    def every(self, name: str, interval_s: float, step: Callable[[], Awaitable[object]], *,
              passing: tuple[type[BaseException], ...] = REDIS_DOWN, at_start: bool = False) -> None:
        """A loop that runs ``step`` every ``interval_s`` (also at once with ``at_start``) until the service
        stops. A ``passing`` failure (by default a Redis outage) skips one round, logged; anything else
        stops the service loudly."""

        async def loop(ctx: ServiceContext) -> None:
            first = at_start
            while not ctx.stop.is_set():
                ctx.beat(name)
                if not first and await ctx.wait(name, interval_s):
                    return
                first = False
                try:
                    await step()
                except passing as e:
                    log.warning("round_skipped", loop=name, error=str(e) or type(e).__name__)

        self.loop(name, loop)

    async def wait(self, name: str, seconds: float) -> bool:
        """Wait ``seconds`` (or until the service stops: True), beating for loop ``name`` meanwhile — a
        loop waiting for its next round is alive, and the watchdog must see it so."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.beat(name)
            if await pause(self.stop, min(left, 1.0)):
                return True
        return self.stop.is_set()

    def beat(self, name: str) -> None:
        self.progress[name] = time.monotonic()

    def serve_http(self, app: FastAPI) -> None:
        """Serve ``app`` (with ``/metrics``) on this service's port of ``[http.ports]``, bound to
        ``http.host``; it starts once the service is ready and stops with it."""
        port = self.settings.http.ports.get(self.service)
        if not port:
            raise ConfigurationError(f"http.ports.{self.service}", "this service serves HTTP and needs a port")
        served = with_metrics(app)

        async def http(ctx: ServiceContext) -> None:
            ctx.beat("http")
            await serve(served, ctx.settings.http.host, port, ctx.stop)

        self.loops["http"] = http
        self.http_port = port

    def health(self) -> dict[str, object]:
        """What ``/health`` reports: ok when every loop made progress lately."""
        return {"service": self.service, "instance": self.instance, "healthy": self.healthy_since(60.0),
                "started_at": self.started_at, "ts": now_ms()}

    def on_close(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.cleanups.append(fn)

    def healthy_since(self, horizon_s: float) -> bool:
        """True when every consumer and loop made progress within ``horizon_s`` (the HTTP server counts
        as alive while it serves)."""
        now = time.monotonic()
        marks = [c.last_progress for c in self.consumers] + [v for k, v in self.progress.items() if k != "http"]
        return all(now - mark <= horizon_s for mark in marks)


def run(service: str, setup: Setup) -> None:
    """Run ``service``; never returns (exit code 0 after SIGTERM, 78 on bad config, 1 on failure)."""
    settings = settings_or_exit(service)
    configure_logging(service, level=os.environ.get("QT_LOG_LEVEL", "INFO"))
    try:
        code = asyncio.run(_main(service, settings, setup))
    except ConfigurationError as e:
        exit_config_error(service, e)
    sys.exit(code)


async def _main(service: str, settings: Settings, setup: Setup) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = redis_client(settings)
    log.info("service_starting", pid=os.getpid(), redis=_safe_url(settings), exchange=settings.exchange)
    try:
        if not await wait_for_redis(redis, settings, stop):
            return 0
        ctx = await _set_up(service, settings, redis, stop, setup)
        if ctx is None:
            return 0
        if stop.is_set():  # stopped during setup (a standby waiting for its lease): nothing was started
            await _close(ctx)
            log.info("service_stopped", exit_code=0)
            return 0
        for consumer in ctx.consumers:
            await _until_redis(consumer.setup, settings, stop)
        if ctx.http_port is None:
            _start_metrics(service, settings)
        notify("READY=1")
        log.info("service_ready", consumer=ctx.consumer_name,
                 consumes=[c.spec.name for c in ctx.consumers], loops=sorted(ctx.loops))
        return await _supervise(ctx)
    finally:
        await redis.aclose()


#: what a start meets when Redis or the exchange is down for a moment: waited out and started again
STARTUP_OUTAGES: tuple[type[BaseException], ...] = (TemporaryError, *REDIS_DOWN)


async def _set_up(service: str, settings: Settings, redis: Redis, stop: asyncio.Event,
                  setup: Setup) -> ServiceContext | None:
    """Claim the instance and run ``setup``. Redis or the exchange down meanwhile (a restart while Redis
    restarts) is ridden out: what the failed attempt registered is closed, and the start is tried again
    after a capped backoff — the service does not die of it. None when stopped first."""
    backoff = Backoff(settings.bus.reconnect_initial_ms / 1000, settings.bus.reconnect_max_ms / 1000)
    attempt = 0
    while True:
        ctx = ServiceContext(service, settings, redis, stop)
        try:
            if not await claim_instance(ctx):
                return None
            await setup(ctx)
            return ctx
        except STARTUP_OUTAGES as e:
            await _close(ctx)
            delay = backoff.delay_s(attempt)
            attempt += 1
            log.warning("setup_waiting", error=str(e) or type(e).__name__, attempt=attempt, retry_in_s=round(delay, 3))
            if await pause(stop, delay):
                return None
        except BaseException:
            await _close(ctx)
            raise


async def _until_redis(fn: Callable[[], Awaitable[Any]], settings: Settings, stop: asyncio.Event) -> None:
    while True:
        try:
            await fn()
            return
        except REDIS_DOWN:
            await asyncio.sleep(settings.bus.reconnect_initial_ms / 1000)
            if stop.is_set():
                return


async def _supervise(ctx: ServiceContext) -> int:
    work: dict[asyncio.Task[Any], str] = {}
    for consumer in ctx.consumers:
        work[asyncio.create_task(consumer.run(ctx.stop), name=f"consume:{consumer.spec.name}")] = consumer.spec.name
    for name, fn in ctx.loops.items():
        work[asyncio.create_task(fn(ctx), name=f"loop:{name}")] = name
    helpers = [
        asyncio.create_task(_heartbeat(ctx), name="heartbeat"),
        asyncio.create_task(_watchdog(ctx), name="watchdog"),
        asyncio.create_task(_measure(ctx), name="lag"),
    ]
    stopper = asyncio.create_task(ctx.stop.wait(), name="stop")
    code = 0
    done, _ = await asyncio.wait({stopper, *work}, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is stopper:
            continue
        exc = task.exception()
        if exc is not None:
            log.critical("task_failed", task=work[task], error=repr(exc), exc_info=exc)
            code = 1
        elif not ctx.stop.is_set():  # a loop may only end because the service is stopping
            log.critical("task_ended", task=work[task])
            code = 1
    ctx.stop.set()
    notify("STOPPING=1")
    log.info("service_stopping", reason="failure" if code else "signal")
    pending = [t for t in work if not t.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=ctx.settings.runtime.stop_timeout_s)
        for task in late:
            log.error("task_did_not_stop", task=work[task])
            task.cancel()
        for task in pending:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("task_failed_while_stopping", task=work[task], error=repr(task.exception()))
                code = code or 1
    # the helpers end on stop by themselves; cancelling is the backstop (a cancelled Redis call can
    # return normally, so cancellation alone is not relied on)
    _, late_helpers = await asyncio.wait(helpers, timeout=5)
    for task in late_helpers:
        task.cancel()
    await asyncio.gather(*helpers, return_exceptions=True)
    await _close(ctx)
    log.info("service_stopped", exit_code=code)
    return code


async def _close(ctx: ServiceContext) -> None:
    """The service's cleanups, then its heartbeat key goes (only if it is still this process's)."""
    for cleanup in ctx.cleanups:
        try:
            await asyncio.wait_for(cleanup(), timeout=5)
        except Exception as e:
            log.warning("cleanup_failed", error=repr(e))
    try:
        await asyncio.wait_for(_release_heartbeat(ctx), timeout=2)
    except REDIS_DOWN:  # TimeoutError is among them
        pass


def _heartbeat_value(ctx: ServiceContext) -> str:
    return json.dumps({**ProcessIdentity.current().fields(), "started_at": ctx.started_at, "ts": now_ms(),
                       "consumer": ctx.consumer_name, "healthy": ctx.healthy_since(60.0)})


def _holder(raw: str | None) -> ProcessIdentity | None:
    try:
        beat = json.loads(raw) if raw else None
    except ValueError:
        return None
    return ProcessIdentity.from_heartbeat(beat) if isinstance(beat, dict) else None


async def claim_instance(ctx: ServiceContext) -> bool:
    """Take this instance's heartbeat key before anything else. Another live process holding it (the
    same service started twice on one host under one name) is a configuration error (exit 78): two
    instances must not share a consumer name. A crashed predecessor's key is taken over at once; a holder
    that cannot be judged from here (another machine with the same host name) is waited out until its
    key lapses. False when stopped while waiting."""
    key = keys.heartbeat(ctx.service, ctx.instance)
    ttl_ms = ctx.settings.runtime.heartbeat_ttl_s * 1000
    me = ProcessIdentity.current()
    deadline = time.monotonic() + 2 * ttl_ms / 1000
    while True:
        if await ctx.redis.set(key, _heartbeat_value(ctx), nx=True, px=ttl_ms):
            return True
        raw: Any = await ctx.redis.get(key)
        holder = _holder(raw)
        if holder is not None and holder.pid == me.pid and holder.boot_id == me.boot_id:
            return True
        alive = holder.alive_here() if holder is not None else None
        if alive is False:
            log.warning("heartbeat_taken_from_dead_predecessor", previous_pid=holder.pid if holder else None)
            await ctx.redis.set(key, _heartbeat_value(ctx), px=ttl_ms)
            return True
        if alive or time.monotonic() > deadline:
            raise ConfigurationError(
                "instance", f"another {ctx.service} runs as {ctx.consumer_name} (pid "
                f"{holder.pid if holder else '?'}): give each instance on a host its own QT_INSTANCE")
        if await pause(ctx.stop, 0.5):
            return False


async def _release_heartbeat(ctx: ServiceContext) -> None:
    """Delete the heartbeat key if this process holds it (never a live successor's)."""
    from redis.exceptions import WatchError

    key = keys.heartbeat(ctx.service, ctx.instance)
    me = ProcessIdentity.current()
    async with ctx.redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            raw: Any = await pipe.get(key)
            holder = _holder(raw)
            if holder is not None and holder.pid == me.pid:
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated
                pipe.delete(key)
                await pipe.execute()
        except WatchError:
            pass


async def _heartbeat(ctx: ServiceContext) -> None:
    """``quantum:heartbeat:{service}:{instance}`` with a TTL, refreshed while the service lives."""
    runtime = ctx.settings.runtime
    key = keys.heartbeat(ctx.service, ctx.instance)
    while not ctx.stop.is_set():
        try:
            await ctx.redis.set(key, _heartbeat_value(ctx), px=runtime.heartbeat_ttl_s * 1000)
        except REDIS_DOWN:
            pass
        await pause(ctx.stop, runtime.heartbeat_interval_s)


async def _watchdog(ctx: ServiceContext) -> None:
    """WATCHDOG=1 at half the unit's WatchdogSec, only while every loop makes progress."""
    interval = watchdog_interval_s()
    if interval is None:
        return
    while not ctx.stop.is_set():
        # a blocking read lasts block_ms; a loop silent for twice the watchdog period is hung
        if ctx.healthy_since(max(interval * 4, ctx.settings.bus.block_ms / 1000 * 3)):
            notify("WATCHDOG=1")
        else:
            log.error("watchdog_withheld", reason="a loop made no progress")
        await pause(ctx.stop, interval)


async def _measure(ctx: ServiceContext) -> None:
    """Consumer lag and pending, for /metrics."""
    while not ctx.stop.is_set():
        for consumer in ctx.consumers:
            try:
                await consumer.measure()
            except REDIS_DOWN:
                pass
            except Exception as e:
                log.debug("measure_failed", stream=consumer.spec.name, error=repr(e))
        await pause(ctx.stop, ctx.settings.bus.lag_interval_s)


def _start_metrics(service: str, settings: Settings) -> None:
    port = settings.runtime.metrics_ports.get(service, 0)
    if port:
        try:
            start_http_server(port, addr=settings.runtime.metrics_host)
            log.info("metrics_serving", host=settings.runtime.metrics_host, port=port)
        except OSError as e:
            log.error("metrics_port_unavailable", port=port, error=str(e))


def _safe_url(settings: Settings) -> str:
    url = settings.redis_url
    return f"{url.scheme}://{url.host}:{url.port}{url.path or ''}"
