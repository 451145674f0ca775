"""What a forkpoint killed with SIGKILL leaves behind, and its removal by the next one.

A controller's runtime dir (its socket) and a save being built (``.NAME.saving-PID`` in the
store) are each held by an exclusive ``flock`` on a file inside, taken by the process that
made it. The kernel drops the lock when that process dies, however it dies, so the next
forkpoint command tells a dir whose owner is gone by taking the lock (a pid alone could be
reused by an unrelated process) and removes it. A ``.NAME.old-PID`` left between the two
renames that put a new save in place is the previous session: put back if the new one is not
there, else removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pathlib and shutil only when sweeping: launch.py locks before either is needed
    from pathlib import Path

__all__ = ["LOCK", "exclusive", "hold", "in_use", "share", "sweep", "try_hold", "try_lock"]

LOCK = ".owner.lock"
_RUNTIME = re.compile(r"^(\d+)-")  # a controller's runtime dir: PID-random
_PARTIAL = re.compile(r"^\.(.+)\.(saving|old)-(\d+)$")
_WRITER = re.compile(r"^\..+\.writer\.lock$")  # store.one_writer's, left by a killed save or import


def _lock(path: Path | str, how: int) -> int | None:
    """The fd of ``path`` (made if need be, close-on-exec so no child holds it) locked ``how``;
    None when a non-blocking lock is held elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def hold(folder: Path | str) -> int:
    """Lock ``folder`` for this process's life (waiting for another holder, if any)."""
    fd = _lock(os.path.join(folder, LOCK), fcntl.LOCK_EX)
    assert fd is not None
    return fd


def share(folder: Path | str) -> int | None:
    """A shared hold on ``folder`` (a session restored by this controller: others may restore it
    too), or None while someone holds it exclusively (removes it, or saves over it)."""
    return _lock(os.path.join(folder, LOCK), fcntl.LOCK_SH | fcntl.LOCK_NB)


@contextlib.contextmanager
def exclusive(path: Path | str, wait: bool = True) -> Iterator[bool]:
    """One process at a time in the block, across processes: waits for the others, or with
    ``wait`` False yields False at once (the block runs without the lock) while one is in it.
    The lock file is removed when the block ends, so that one per name or secret does not
    pile up; a process that then holds the removed file's lock tries again on the new one."""
    while True:
        fd = _lock(path, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            yield False
            return
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def try_hold(folder: Path | str) -> int | None:
    """Lock ``folder`` exclusively unless another open holds it (shared or not)."""
    return try_lock(os.path.join(folder, LOCK))


def try_lock(path: Path | str) -> int | None:
    """An exclusive lock on the file ``path``, or None if it is held."""
    return _lock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)


def in_use(folder: Path | str) -> bool:
    """Whether a live forkpoint holds ``folder`` (has it restored, or saves into it)."""
    fd = try_hold(folder) if os.path.isdir(folder) else None
    if fd is None:
        return os.path.isdir(folder)
    os.close(fd)
    return False


def _abandoned(folder: Path) -> bool:
    """Whether no live process holds ``folder``: its lock can be taken (or it has none, and
    its maker's pid is gone)."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        found = _RUNTIME.match(folder.name) or _PARTIAL.match(folder.name)
        pid = int(found.group(found.lastindex or 1)) if found else 0
        return pid > 0 and not os.path.exists(f"/proc/{pid}")
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def sweep(runtime_root: str, sessions: Path) -> list[str]:
    """Remove the runtime dirs, partial saves and writer locks of dead forkpoints; what was
    removed (dirs; the locks are empty files, not counted)."""
    import shutil
    from pathlib import Path

    removed: list[str] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(runtime_root):
            folder = Path(entry.path)
            if entry.is_dir(follow_symlinks=False) and _RUNTIME.match(entry.name) and _abandoned(folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
    with contextlib.suppress(OSError):
        for entry in os.scandir(sessions):
            if _WRITER.match(entry.name) and entry.is_file(follow_symlinks=False):
                with exclusive(entry.path, wait=False):
                    pass  # free: removed as the block ends (held: a save is running)
                continue
            found = _PARTIAL.match(entry.name)
            folder = Path(entry.path)
            if not found or not entry.is_dir(follow_symlinks=False) or not _abandoned(folder):
                continue
            final = sessions / found.group(1)
            if found.group(2) == "old" and not os.path.lexists(final):
                with contextlib.suppress(OSError):
                    (folder / LOCK).unlink(missing_ok=True)
                    folder.rename(final)  # the previous session, put back in its place
                    continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed
