"""Noticing a head that waits for good in a native pool it lost with the fork.

A head forked from a checkpoint taken while polars' pool ran cannot use polars: its next
parallel call waits on workers that were never copied (agent/native.py). The head says so in
its hello; while an input runs in such a head, this watches the head's CPU time, and once it
has not moved for ``QUIET`` seconds the user is told why the input does not return and what
ends it, instead of a silent hang. A head that sleeps on purpose as long is told the same, in
words that say "most likely".
"""

from __future__ import annotations

from forkpoint.controller.events import StalledInPool

__all__ = ["StallWatch"]

QUIET = 3.0  # seconds without CPU time before the user is told


class StallWatch:
    """One input's watch; ``start`` for each input, ``step`` as often as the wait allows."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._pools: tuple[str, ...] = ()
        self._cpu = -1
        self._since = 0.0

    def start(self, pid: int | None, pools: tuple[str, ...], now: float) -> None:
        """An input starts in head ``pid``, which lost ``pools`` (none: nothing to watch)."""
        self._pid = pid if pools else None
        self._pools, self._cpu, self._since = pools, -1, now

    def step(self, now: float) -> StalledInPool | None:
        """The event to tell, once per input, when the head has used no CPU for ``QUIET`` s."""
        if self._pid is None:
            return None
        cpu = _cpu_ticks(self._pid)
        if cpu != self._cpu:
            self._cpu, self._since = cpu, now
            return None
        if now - self._since < QUIET:
            return None
        self._pid = None
        return StalledInPool(self._pools, now - self._since)


def _cpu_ticks(pid: int) -> int:
    """utime + stime of the process, all its threads (/proc/PID/stat); -1 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return -1
    return int(fields[11]) + int(fields[12])
