"""Native runtimes whose thread pools a fork breaks: made safe before every fork the agent
makes where that can be done, and named where it cannot.

Only the forking thread survives ``fork()``. A C library's pool in the child still believes its
workers exist:

* GNU OpenMP (libgomp, which scikit-learn, PyTorch and xgboost each vendor a copy of) waits
  forever on them in the first parallel region (libgomp/team.c, ``gomp_team_start``) and has no
  at-fork handler. ``omp_pause_resource_all(omp_pause_hard)`` on each copy, in the process about
  to fork (in the child it is too late: the call hangs there), releases the workers; the runtime
  starts new ones at its next parallel region, in the parent and in every process forked from it.
* OpenCV's pthreads pool runs single-threaded in a forked child (``ThreadPool::run`` sees the
  dead workers in its vector; modules/core/src/parallel_impl.cpp). Setting its thread count to 1
  and back joins the workers (``ThreadPool::reconfigure``); they start again at the next call.
* polars' rayon pool cannot be released from outside: a polars call in a forked child waits
  forever, whatever ``POLARS_MAX_THREADS`` says. Its threads are named ``polars-N``; while they
  are alive at a fork, the pool is "unsafe" and the checkpoint (and every head forked from it)
  carries that, so that the head can tell the controller (``carried``) and a stall be explained.

OpenBLAS, numexpr and pyarrow handle fork themselves. Each look costs little while a library is
not loaded: ``sys.modules`` for OpenCV; ``/proc/self/maps`` for OpenMP, read again only after an
import; for polars ``sys.modules``, then ``/proc/self/task``, its threads' names read again only
when the set changed.

Imported by the agent: standard library only (ctypes on the runtimes' own symbols).
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Callable

__all__ = ["before_fork", "carried", "pools_loaded", "unsafe_pools"]

_OMP_PAUSE_HARD = 2  # omp_pause_resource_all(omp_pause_hard): threads and their state go
_omp: list[Callable[[int], int]] = []  # omp_pause_resource_all of each OpenMP copy loaded
_modules_seen = -1  # len(sys.modules) when /proc/self/maps was last read
_UNSAFE_THREADS = {"polars": re.compile(r"polars-\d+$")}  # a pool alive if a thread is named so
_tasks_seen: tuple[str, ...] = ()
_unsafe_seen: tuple[str, ...] = ()
_carried: set[str] = set()  # unsafe pools alive at a fork this process's memory comes from


def before_fork() -> None:
    """Release the workers of every loaded runtime with a pool a fork would break."""
    _openmp()
    _opencv()


def unsafe_pools() -> tuple[str, ...]:
    """The pools alive now that no adapter can make safe: a process forked now cannot use
    them. Remembered in ``carried`` for the heads forked from what is forked next."""
    global _tasks_seen, _unsafe_seen
    if not any(pool in sys.modules for pool in _UNSAFE_THREADS):  # no such pool without its import
        return ()
    try:
        tasks = tuple(os.listdir("/proc/self/task"))
    except OSError:
        return ()
    if len(tasks) == 1:
        return ()
    if tasks != _tasks_seen:
        _tasks_seen = tasks
        names = {_thread_name(tid) for tid in tasks}
        _unsafe_seen = tuple(
            pool for pool, named in _UNSAFE_THREADS.items() if any(named.match(n) for n in names)
        )
    _carried.update(_unsafe_seen)
    return _unsafe_seen


def carried() -> tuple[str, ...]:
    """The unsafe pools that were alive when this process's checkpoint was taken (in a new
    head: the libraries that will wait forever here)."""
    return tuple(sorted(_carried))


def pools_loaded() -> tuple[str, ...]:
    """The runtimes with a pool the adapters reset, as loaded now (a thread of the user's
    inside one at a fork defeats its adapter)."""
    _find_openmp()
    return (("OpenCV",) if "cv2" in sys.modules else ()) + (("OpenMP",) if _omp else ())


def _thread_name(tid: str) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _opencv() -> None:
    cv2 = sys.modules.get("cv2")
    if cv2 is None:
        return
    try:
        n = cv2.getNumThreads()
        cv2.setNumThreads(1)
        cv2.setNumThreads(n)
    except Exception:  # noqa: BLE001 - not the OpenCV we know (a stub, a partial import)
        pass


def _openmp() -> None:
    _find_openmp()
    for pause in _omp:
        pause(_OMP_PAUSE_HARD)


def _find_openmp() -> None:
    global _modules_seen
    if len(sys.modules) != _modules_seen:  # a library can only have come with an import
        _modules_seen = len(sys.modules)
        _omp[:] = _pause_functions()


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
