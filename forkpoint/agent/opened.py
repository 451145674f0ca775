"""The files the user's code opened for writing, and when, so that a rewind can say which
writes it does not undo (a rewind puts memory back; a file written since stays written).

An audit hook (PEP 578) sees every ``open()`` and ``os.open()`` of Python code, including
libraries'; C code that opens files itself is not seen. The record is in memory, so a head
forked from a checkpoint inherits the record of its branch up to that checkpoint.

Imported by the agent: standard library only.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["install", "since"]

_WRITING = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_record: list[tuple[float, str]] = []  # (wall time, absolute path), in order
_installed = False
_ours: tuple[str, ...] = ("/dev/", "/proc/")  # and forkpoint's own dirs, given to install()


def install(*ours: str) -> None:
    """Record from now on; writes under the dirs ``ours`` are forkpoint's (the code cache, the
    runtime dir), not the user's. Nothing is computed in the hook: it runs inside imports."""
    global _installed, _ours
    if not _installed:
        _installed = True
        _ours = (*_ours, *(os.path.join(d, "") for d in ours))
        sys.addaudithook(_hook)


def since(moment: float) -> list[str]:
    """Files opened for writing after ``moment`` (time.time()), each once, that still exist."""
    seen: dict[str, None] = {}
    for at, path in reversed(_record):
        if at < moment:
            break
        seen.setdefault(path, None)
    return sorted(p for p in seen if os.path.exists(p))


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event != "open":
        return
    path, mode, flags = (tuple(args) + (None, None, None))[:3]
    if isinstance(mode, str):
        writing = any(c in mode for c in "wax+")
    else:
        writing = isinstance(flags, int) and bool(flags & _WRITING)
    if not writing or not isinstance(path, (str, bytes)):
        return
    name = os.path.abspath(os.fsdecode(path))
    if name.startswith(_ours):
        return
    _record.append((time.time(), name))
    if len(_record) > 10_000:
        del _record[:5_000]
