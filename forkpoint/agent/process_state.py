"""What of a process's state a fork copies wrongly, read before a checkpoint and put back in
a new head: file offsets (fork shares open file descriptions, so a head reading on moves
them), buffered output, other threads (fork copies only the calling one), an open NVIDIA
device (fork copies no CUDA context).

Imported by the agent: standard library only.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import sys
import termios
import time
from typing import NamedTuple

__all__ = [
    "Scan",
    "Written",
    "flush",
    "other_threads",
    "restore_offsets",
    "rewind_written",
    "scan_fds",
]

_NVIDIA_MAJOR = 195


def other_threads() -> list[str]:
    """Names of the threads alive besides this one."""
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() == 1:
        return []
    return [t.name for t in threading.enumerate() if t is not threading.current_thread()]


class Written(NamedTuple):
    """A regular file open for writing (not append-only, not stdio) at a checkpoint."""

    fd: int
    dev: int
    ino: int
    offset: int
    size: int
    path: str
    unlinked: bool  # already deleted (a temporary file): no path to check, nothing to tell


class Scan(NamedTuple):
    """What the fds held at a checkpoint."""

    offsets: list[tuple[int, int, int, int]]  # regular files open for reading: fd, dev, ino, offset
    written: list[Written]
    nvidia: bool  # an NVIDIA device is open


def scan_fds() -> Scan:
    """Offsets of regular files open for reading, where each file open for writing stood, and
    whether an NVIDIA device is open."""
    nvidia = False
    offsets = []
    written = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                if flags & os.O_APPEND:
                    continue  # a log: output goes on
                at = os.lseek(fd, 0, os.SEEK_CUR)
                if flags & os.O_ACCMODE == os.O_RDONLY:
                    offsets.append((fd, st.st_dev, st.st_ino, at))
                elif fd > 2:  # stdout redirected to a file keeps going forward
                    path = os.readlink(f"/proc/self/fd/{fd}")
                    unlinked = st.st_nlink == 0
                    written.append(Written(fd, st.st_dev, st.st_ino, at, st.st_size, path, unlinked))
            elif stat.S_ISCHR(st.st_mode) and _is_nvidia(fd, st):
                nvidia = True
        except OSError:
            continue
    return Scan(offsets, written, nvidia)


def rewind_written(written: list[Written]) -> tuple[list[str], list[str]]:
    """In a new head: cut each file the process was writing back to its size at the
    checkpoint and put its offset back (fork shares the open file, so the failed head's
    writes are in it). Returns the files rewound, and those left as they are because that
    would not be right: replaced at their path since, or now shorter (someone else wrote).
    Temporary files deleted before the checkpoint (pytest's capture files) are rewound
    without a word: only this process can reach them, and the user never named them."""
    rewound, kept = [], []
    for w in written:
        try:
            st = os.fstat(w.fd)
            if (st.st_dev, st.st_ino) != (w.dev, w.ino):
                continue  # not the same file: the fd was closed and reused
            replaced = False
            if not w.unlinked:
                try:
                    there = os.stat(w.path)
                    replaced = (there.st_dev, there.st_ino) != (w.dev, w.ino)
                except FileNotFoundError:
                    replaced = True
            if replaced or st.st_size < w.size:
                if not w.unlinked:
                    kept.append(w.path)
                continue
            if st.st_size != w.size or os.lseek(w.fd, 0, os.SEEK_CUR) != w.offset:
                os.ftruncate(w.fd, w.size)
                os.lseek(w.fd, w.offset, os.SEEK_SET)
                if not w.unlinked:
                    rewound.append(w.path)
        except OSError:
            if not w.unlinked:
                kept.append(w.path)
    return rewound, kept


def _is_nvidia(fd: int, st: os.stat_result) -> bool:
    if os.major(st.st_rdev) == _NVIDIA_MAJOR:
        return True
    if os.major(st.st_rdev) in (1, 4, 5, 136):  # mem (null, zero), ttys, ptys: the common case
        return False
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/nvidia")
    except OSError:
        return False


_pipes = False  # fds 1 and 2 are the engine's pipes (a notebook kernel's head): see settle


def use_pipes() -> None:
    global _pipes
    _pipes = True


def settle() -> None:
    """Flush, and in pipes mode wait (at most ``SETTLE_WAIT``) until the controller has read
    all of fds 1 and 2: a message sent after this comes after everything printed before it,
    C-level writes and child processes' included, and before anything printed after."""
    flush()
    if not _pipes:
        return
    deadline = time.monotonic() + SETTLE_WAIT
    for fd in (1, 2):
        while _unread(fd) > 0 and time.monotonic() < deadline:
            time.sleep(0.0002)


SETTLE_WAIT = 2.0


def _unread(fd: int) -> int:
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def flush() -> None:
    """stdio and logging handlers, before every fork: buffered output would otherwise be
    written again by every head forked from the checkpoint."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or the user's object has no flush
            pass
    logging = sys.modules.get("logging")
    if logging is not None:
        for ref in list(getattr(logging, "_handlerList", [])):
            handler = ref()
            try:
                if handler is not None:
                    handler.flush()
            except Exception:
                pass


def restore_offsets(offsets: list[tuple[int, int, int, int]]) -> None:
    for fd, dev, ino, pos in offsets:
        try:
            st = os.fstat(fd)
            if st.st_dev == dev and st.st_ino == ino:
                os.lseek(fd, pos, os.SEEK_SET)
        except OSError:
            pass
