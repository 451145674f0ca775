"""Native runtimes whose thread pools a fork breaks, made safe before every fork the agent makes.

Only the forking thread survives ``fork()``. A C library's pool in the child still believes its
workers exist: GNU OpenMP (libgomp, which scikit-learn, PyTorch and xgboost each vendor a copy
of) waits forever on them in the first parallel region (libgomp/team.c, ``gomp_team_start``),
and has no at-fork handler. The adapter here releases its workers in the process that is about
to fork (in the child it would be too late: the call hangs there); the runtime starts new ones
at its next parallel region, in the parent and in every process forked from it.

It costs nothing while no OpenMP is loaded: the copies are looked for in ``/proc/self/maps``,
read again only when a module was imported since. OpenBLAS, numexpr and pyarrow handle fork
themselves. OpenCV's pthreads backend runs single-threaded in a forked child (issue 13); its
adapter (``setNumThreads(1)`` then back, before the fork) is not in yet: in one measurement it
made the head's own later calls slower, which is not understood.

Imported by the agent: standard library only (ctypes on the runtimes' own symbols).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

__all__ = ["before_fork"]

_OMP_PAUSE_HARD = 2  # omp_pause_resource_all(omp_pause_hard): threads and their state go
_omp: list[Callable[[int], int]] = []  # omp_pause_resource_all of each OpenMP copy loaded
_modules_seen = -1  # len(sys.modules) when /proc/self/maps was last read


def before_fork() -> None:
    """Release the workers of every loaded runtime with a pool a fork would break."""
    _openmp()


def _openmp() -> None:
    global _modules_seen
    if len(sys.modules) != _modules_seen:  # a library can only have come with an import
        _modules_seen = len(sys.modules)
        _omp[:] = _pause_functions()
    for pause in _omp:
        pause(_OMP_PAUSE_HARD)


def _pause_functions() -> list[Callable[[int], int]]:
    """omp_pause_resource_all of each libgomp mapped in this process (OpenMP 5.0, GCC 9+)."""
    found: list[Callable[[int], int]] = []
    try:
        with open("/proc/self/maps") as maps:
            rows = [line.split(None, 5) for line in maps if "libgomp" in line]
        paths = {row[5].strip() for row in rows if len(row) == 6}
    except OSError:
        return []
    for path in sorted(p for p in paths if os.path.basename(p).startswith("libgomp")):
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)  # the copy already loaded, never a new one
            pause = lib.omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        found.append(pause)
    return found
