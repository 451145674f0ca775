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
import sys

__all__ = ["flush", "nvidia_open", "other_threads", "restore_offsets", "scan_fds"]

_NVIDIA_MAJOR = 195
nvidia_open = False  # an NVIDIA device was among the fds at the last scan


def other_threads() -> list[str]:
    """Names of the threads alive besides this one."""
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() == 1:
        return []
    return [t.name for t in threading.enumerate() if t is not threading.current_thread()]


def scan_fds() -> list[tuple[int, int, int, int]]:
    """Offsets of open regular files; also notes an open NVIDIA device (``nvidia_open``)."""
    global nvidia_open
    nvidia_open = False
    offsets = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and _rewinds_offset(fd):
                offsets.append((fd, st.st_dev, st.st_ino, os.lseek(fd, 0, os.SEEK_CUR)))
            elif stat.S_ISCHR(st.st_mode) and _is_nvidia(fd, st):
                nvidia_open = True
        except OSError:
            continue
    return offsets


def _rewinds_offset(fd: int) -> bool:
    """Files opened for reading get their offset back; output files (stdout redirected to a
    log, write-only or append mode) keep going forward, or a rewind would overwrite output."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    return not (flags & os.O_APPEND) and flags & os.O_ACCMODE != os.O_WRONLY


def _is_nvidia(fd: int, st: os.stat_result) -> bool:
    if os.major(st.st_rdev) == _NVIDIA_MAJOR:
        return True
    if os.major(st.st_rdev) in (1, 4, 5, 136):  # mem (null, zero), ttys, ptys: the common case
        return False
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/nvidia")
    except OSError:
        return False


def flush() -> None:
    """stdio and logging handlers, before every fork: buffered output would otherwise be
    written again by every head forked from the checkpoint."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
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
