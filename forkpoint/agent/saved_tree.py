"""The pieces of a saved tree that do not fork: the init of its PID namespace, the candidate
letting go of everything outside the tree, and pids passed up through pipes. (The forks
that make the tree are ``snapshot``'s, the one module that forks.)

Imported by the agent: standard library only.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import NoReturn

from forkpoint.channel import Channel

__all__ = ["detach", "exec_init", "read_pid", "started", "write_pid"]

_ADDR_NO_RANDOMIZE = 0x0040000


def read_pid(pipe: tuple[int, int]) -> int:
    """The pid a child wrote into ``pipe`` (the reading end's side)."""
    os.close(pipe[1])
    data = b""
    while chunk := os.read(pipe[0], 32):
        data += chunk
    os.close(pipe[0])
    return int(data)


def write_pid(pipe: tuple[int, int], pid: int) -> None:
    """Tell the parent ``pid`` (as the controller sees it: a restored process's own pid is
    its namespace's) through ``pipe``."""
    os.close(pipe[0])
    os.write(pipe[1], str(pid).encode())
    os.close(pipe[1])


# The init of a saved process's PID namespace: it says its pid (as the controller sees it,
# through /proc), then reaps whatever ends up its child until nothing is left. It dies with
# its parent (PR_SET_PDEATHSIG, which CRIU restores: the parent is then the new controller),
# and the kernel then ends everything in the namespace, a busy head included. A fresh
# interpreter, not a fork of the checkpoint, or CRIU would store the checkpoint's memory twice.
_INIT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
fd = int(sys.argv[1])
os.write(fd, os.readlink("/proc/self").encode())
os.close(fd)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def exec_init(report: int) -> NoReturn:
    """Become the init (``_INIT``), reporting its pid on ``report``."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, report)
    os.closerange(report + 1, 1 << 16)
    os.set_inheritable(report, True)
    # The same layout and hash seed each time, so the inits of a session's dumps hold the
    # same pages, which its later dumps then read from the earlier ones (persist.pages).
    ctypes.CDLL(None, use_errno=True).personality(_ADDR_NO_RANDOMIZE)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    os.execve(sys.executable, [sys.executable, "-S", "-s", "-c", _INIT, str(report)], env)


def started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None if there is none or it
    has exited (a zombie): a pid and its start time name one process, whatever pids are
    reused later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[19])  # field 22 of stat; the first two (pid, comm) are cut off
    except (OSError, IndexError, ValueError):
        return None


def detach(ch: Channel) -> None:
    """Hold nothing outside the saved tree: no controller connection, no terminal."""
    ch.close()
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
