"""sd_notify(3) without a dependency: READY=1, WATCHDOG=1, STOPPING=1 to ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` to systemd; False (and nothing done) when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """Half the unit's ``WatchdogSec`` (how often to send WATCHDOG=1), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2
