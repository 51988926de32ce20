"""Which process is this, exactly: the identity a heartbeat carries, so that a second instance started
under the same name on the same host is told apart from a crashed predecessor (whose pid is gone, or
reused by another process since)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), "" if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) is in parentheses and may contain spaces: split after its closing one
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    boot_id: str
    start_ticks: str

    @classmethod
    def current(cls) -> ProcessIdentity:
        pid = os.getpid()
        return cls(pid, _boot_id(), _start_ticks(pid))

    @classmethod
    def from_heartbeat(cls, beat: dict[str, Any]) -> ProcessIdentity | None:
        try:
            return cls(int(beat["pid"]), str(beat.get("boot_id", "")), str(beat.get("start_ticks", "")))
        except (KeyError, TypeError, ValueError):
            return None

    def fields(self) -> dict[str, object]:
        return {"pid": self.pid, "boot_id": self.boot_id, "start_ticks": self.start_ticks}

    def alive_here(self) -> bool | None:
        """True when this process is alive on this machine, False when it is provably gone (same boot,
        and its pid is free or now another process's), None when it cannot be told (another machine)."""
        if not self.boot_id or self.boot_id != _boot_id():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        # a start time that differs: the pid was reused by another process
        return not (self.start_ticks and _start_ticks(self.pid) not in ("", self.start_ticks))
