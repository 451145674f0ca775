"""Pools whose threads a rewind lost: a clear error, or threads again, never a silent hang.

``fork()`` copies only the calling thread, so in a head forked from a checkpoint a
``multiprocessing`` pool or a ``concurrent.futures`` executor made before it still believes
in its worker and handler threads, and the next ``map`` or ``submit`` waits for them forever.
In such a head this module patches the standard library's pool classes, once:

* a ``ThreadPoolExecutor`` forgets its dead workers and starts new ones, so it just works;
* a ``multiprocessing`` ``Pool``/``ThreadPool`` or a ``ProcessPoolExecutor`` (whose worker
  processes belong to the head the checkpoint was taken from) raises an error that says why
  and what to do.

Objects made after the rewind have live threads and are never touched. Imported by the agent:
standard library only.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["MESSAGE", "guard"]

MESSAGE = (
    "this {kind} was made before the checkpoint this process was rewound to, and its threads "
    "did not survive the rewind (a fork keeps only the thread that forks): make a new one"
)
_done: set[str] = set()


def guard() -> None:
    """In a head forked from a checkpoint: patch the pool classes loaded by now."""
    if "multiprocessing.pool" in sys.modules and "pool" not in _done:
        _done.add("pool")
        _guard_pool(sys.modules["multiprocessing.pool"])
    if "concurrent.futures.thread" in sys.modules and "thread" not in _done:
        _done.add("thread")
        _guard_thread_executor(sys.modules["concurrent.futures.thread"])
    if "concurrent.futures.process" in sys.modules and "process" not in _done:
        _done.add("process")
        _guard_process_executor(sys.modules["concurrent.futures.process"])


def _dead(thread: object) -> bool:
    return isinstance(thread, threading.Thread) and thread.ident is not None and not thread.is_alive()


def _guard_pool(module: Any) -> None:
    check = module.Pool._check_running

    def _check_running(self: Any) -> None:
        if _dead(getattr(self, "_worker_handler", None)) and self._state == module.RUN:
            raise RuntimeError(MESSAGE.format(kind=type(self).__name__))
        check(self)

    module.Pool._check_running = _check_running


def _guard_thread_executor(module: Any) -> None:
    submit = module.ThreadPoolExecutor.submit

    def _submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        dead = {t for t in self._threads if _dead(t)}
        if dead:  # its workers are gone: forget them, and the idle ones they counted
            self._threads -= dead
            self._idle_semaphore = threading.Semaphore(0)
        return submit(self, fn, *args, **kwargs)

    module.ThreadPoolExecutor.submit = _submit


def _guard_process_executor(module: Any) -> None:
    submit = module.ProcessPoolExecutor.submit

    def _submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if _dead(getattr(self, "_executor_manager_thread", None)):
            raise module.BrokenProcessPool(MESSAGE.format(kind="ProcessPoolExecutor"))
        return submit(self, fn, *args, **kwargs)

    module.ProcessPoolExecutor.submit = _submit
