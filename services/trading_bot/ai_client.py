"""Asking ai_engine for a side, within a tight deadline; any failure means "use the fallback"."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from common.contracts import Side


@dataclass(frozen=True)
class AiPrediction:
    side: Side
    confidence: float
    model: str
    version: int


@dataclass(frozen=True)
class AiAnswer:
    """A prediction, or the reason there is none: ``down``, ``timeout``, ``not_ready``, ``http_<status>``,
    ``bad_answer``."""

    prediction: AiPrediction | None
    reason: str = ""
    latency_ms: int = 0


class AiClient:
    """``POST {ai_engine_url}/predict`` with a total deadline of ``timeout_ms`` (connect included)."""

    def __init__(self, base_url: str, timeout_ms: int) -> None:
        self.timeout_s = timeout_ms / 1000
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=self.timeout_s)

    async def predict(self, symbol: str, interval: str, klines: Sequence[Sequence[str]]) -> AiAnswer:
        loop = asyncio.get_running_loop()
        started = loop.time()

        def answer(prediction: AiPrediction | None, reason: str = "") -> AiAnswer:
            return AiAnswer(prediction, reason, int((loop.time() - started) * 1000))

        body = {"symbol": symbol, "interval": interval, "klines": [list(row) for row in klines]}
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._http.post("/predict", json=body)
        except TimeoutError:
            return answer(None, "timeout")
        except httpx.TimeoutException:
            return answer(None, "timeout")
        except httpx.HTTPError:
            return answer(None, "down")
        if response.status_code == 503:
            return answer(None, "not_ready")
        if response.status_code != 200:
            return answer(None, f"http_{response.status_code}")
        try:
            data = response.json()
            confidence = float(data["confidence"])
            if not 0.0 <= confidence <= 1.0:
                raise ValueError(confidence)
            prediction = AiPrediction(Side(data["side"]), confidence, str(data["model"]), int(data["version"]))
        except (ValueError, KeyError, TypeError):
            return answer(None, "bad_answer")
        return answer(prediction)

    async def aclose(self) -> None:
        await self._http.aclose()
