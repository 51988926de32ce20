"""The fleet as real processes against the suite's Redis, for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path

import redis

from common import keys
from common.bus.effects import Publish, queue_ops
from common.contracts import MarketTick, new_trace_id, now_ms
from common.market import price_mapping
from common.streams import Service, Stream
from tests.integration.processes import Proc

#: fast loops, no fixed metrics ports (several fleets may share the machine)
FAST = {
    "QT_BUS__BLOCK_MS": "100", "QT_BUS__CLAIM_INTERVAL_MS": "200", "QT_BUS__CLAIM_IDLE_MS": "2000",
    "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5", "QT_EXIT__EVALUATE_INTERVAL_S": "0.1", "QT_EXIT__PNL_INTERVAL_S": "0.5",
    "QT_MONITOR__SNAPSHOT_INTERVAL_S": "0.5", "QT_MONITOR__RECONCILE_INTERVAL_S": "2",
    "QT_GOVERNOR__RISK_CHECK_INTERVAL_S": "0.5", "QT_GOVERNOR__POLICY_CHECK_INTERVAL_S": "1",
    **{f"QT_RUNTIME__METRICS_PORTS__{s.upper()}": "0" for s in Service.ALL},
}


@contextmanager
def fleet(redis_url: str, tmp_path: Path, services: list[str], **env: str) -> Iterator[dict[str, Proc]]:
    """Start ``services`` as processes; on exit SIGTERM them all and require exit code 0 from each."""
    procs: dict[str, Proc] = {}
    with ExitStack() as stack:
        for name in services:
            proc = Proc(["-m", f"services.{name}"], {"REDIS_URL": redis_url, **FAST, **env},
                        tmp_path / f"{name}.log").start()
            procs[name] = proc
            stack.callback(proc.kill)
        yield procs
        codes = {name: proc.terminate() for name, proc in procs.items()}
        assert set(codes.values()) == {0}, {n: (c, procs[n].log()[-2000:]) for n, c in codes.items() if c}


def set_price(client: redis.Redis, symbol: str, price: str) -> None:
    """What marketdata does on a tick: the price hash and a market.tick entry."""
    p = Decimal(price)
    tick = MarketTick(source=Service.MARKETDATA, trace_id=new_trace_id(), symbol=symbol, price=p, mark_price=p)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.market_price(symbol), mapping=price_mapping(p, p, now_ms()))
    queue_ops(pipe, [Publish(Stream.MARKET_TICK, tick)], service=Service.MARKETDATA)  # type: ignore[arg-type]
    pipe.execute()
