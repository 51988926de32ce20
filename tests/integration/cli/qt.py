"""Run ``qt`` as an operator does: a subprocess against a Redis URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def qt(redis_url: str, *args: str, timeout_s: float = 60,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``qt ARGS`` against ``redis_url``, with no QT_ variable of ours but those in ``env``."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    run_env.update({"REDIS_URL": redis_url, "PYTHONPATH": str(REPO), "COLUMNS": "220", **(env or {})})
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=run_env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s)
