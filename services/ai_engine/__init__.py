"""ai_engine: predictions of the next klines' direction from a model trained by ``qt train``."""
