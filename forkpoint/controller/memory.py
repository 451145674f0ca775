"""Memory accounting of agents, by pid, with psutil (never inside the agents).

USS (unique set size) is what freeing a process would give back: for a checkpoint, the
pages that the head and other checkpoints no longer share with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

__all__ = ["ProcessMemory", "measure", "physical_memory"]


@dataclass(frozen=True)
class ProcessMemory:
    rss: int
    uss: int
    page_tables: int  # VmPTE: not in USS, but real memory a forked checkpoint costs


def measure(pid: int) -> ProcessMemory | None:
    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return ProcessMemory(info.rss, info.uss, _page_tables(pid))


def _page_tables(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmPTE:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def physical_memory() -> tuple[int, int]:
    """(total, available) bytes of RAM."""
    vm = psutil.virtual_memory()
    return vm.total, vm.available
