"""Memory accounting of agents, by pid, never inside the agents; measured off the input path.

USS (unique set size) is what freeing a process would give back: for a checkpoint, the
pages that the head and other checkpoints no longer share with it. Reading it walks the
process's page tables (``/proc/PID/smaps_rollup``, about 1 ms per GiB mapped), so reading
every checkpoint after every input made each input cost O(checkpoints x memory). Instead a
``MemoryWatch`` thread re-reads only the checkpoints whose USS can have changed (the pool
says which: those the head shared pages with, and the neighbours of one evicted), after the
input has answered; the pool reads the results at its next decision.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MemoryWatch", "ProcessMemory", "measure", "physical_memory"]


@dataclass(frozen=True)
class ProcessMemory:
    rss: int
    uss: int
    page_tables: int  # VmPTE: not in USS, but real memory a forked checkpoint costs

    @property
    def held(self) -> int:
        """What this process alone costs: its unique pages and its page tables."""
        return self.uss + self.page_tables


def measure(pid: int) -> ProcessMemory | None:
    """One process's memory from its smaps_rollup and status, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            rollup = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:  # gone, a zombie (empty rollup), or not ours
        return None
    fields = _kib(rollup, (b"Rss:", b"Private_Clean:", b"Private_Dirty:"))
    if fields is None:
        return None
    rss, private_clean, private_dirty = fields
    pte = _kib(status, (b"VmPTE:",))
    return ProcessMemory(rss, private_clean + private_dirty, pte[0] if pte else 0)


def _kib(text: bytes, names: tuple[bytes, ...]) -> list[int] | None:
    found: dict[bytes, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(b" ")
        if name in names:
            found[name] = int(rest.split()[0]) * 1024
    return [found[n] for n in names] if len(found) == len(names) else None


def physical_memory() -> tuple[int, int]:
    """(total, available) bytes of RAM, from /proc/meminfo."""
    with open("/proc/meminfo", "rb") as f:
        found = _kib(f.read(), (b"MemTotal:", b"MemAvailable:"))
    assert found is not None, "/proc/meminfo without MemTotal/MemAvailable"
    return found[0], found[1]


class MemoryWatch:
    """Measures the pids it is told are stale, in a daemon thread of its own.

    The thread holds no state of the tree: it takes pids, gives back measurements. Reading
    /proc releases the GIL, so the controller's own thread goes on (it is usually waiting on
    the head or on the user's keys anyway). ``flush`` measures what is still waiting in the
    caller's thread, for the decisions that must be exact now (near the budget).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._stale: dict[int, None] = {}  # insertion-ordered set of pids to measure
        self._done: dict[int, ProcessMemory | None] = {}
        self._busy = 0  # pids taken by the thread and not yet posted
        self._thread: threading.Thread | None = None
        self._closed = False

    def stale(self, pids: Iterable[int]) -> None:
        with self._lock:
            if self._closed:
                return
            for pid in pids:
                self._stale[pid] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="forkpoint-memory", daemon=True)
                self._thread.start()
            self._work.notify()

    def take(self) -> dict[int, ProcessMemory | None]:
        """Measurements made since the last take (None: that process was gone)."""
        with self._lock:
            done, self._done = self._done, {}
        return done

    def flush(self) -> dict[int, ProcessMemory | None]:
        """Measure now whatever is still stale, wait for what the thread is measuring, and
        take everything."""
        with self._lock:
            pids, self._stale = list(self._stale), {}
        mine = {pid: measure(pid) for pid in pids}
        with self._lock:
            while self._busy:
                self._work.wait(0.05)
            self._done.update(mine)
        return self.take()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stale.clear()
            self._work.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stale and not self._closed:
                    self._work.wait()
                if self._closed:
                    return
                pid = next(iter(self._stale))
                del self._stale[pid]
                self._busy += 1
            measured = measure(pid)
            with self._lock:
                self._busy -= 1
                self._done[pid] = measured
                self._work.notify_all()
