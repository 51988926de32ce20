"""``python -m services.ai_engine``: direction predictions over HTTP (127.0.0.1:8001), no streams.

The model is the newest version in ``signal.model_dir`` (written by ``qt train``); a newer one is
picked up while running. Without a model ``/predict`` answers 503 and ``/health`` says so. No network
is used at run time.
"""

from __future__ import annotations

import asyncio

import structlog

from common.service import ServiceContext, run
from common.streams import Service
from services.ai_engine.api import build_app
from services.ai_engine.model import model_dir
from services.ai_engine.predictor import ModelStore

log = structlog.get_logger()


async def setup(ctx: ServiceContext) -> None:
    store = ModelStore(model_dir(ctx.settings.signal.model_dir))
    store.refresh()
    if store.current is None:
        log.warning("model_missing", model_dir=str(store.directory), hint="run qt train --data FILE")

    async def reload() -> None:
        await asyncio.to_thread(store.refresh)

    ctx.every("model_reload", ctx.settings.signal.model_reload_s, reload, passing=())
    ctx.serve_http(build_app(store, ctx.health))


def main() -> None:
    run(Service.AI_ENGINE, setup)


if __name__ == "__main__":
    main()
