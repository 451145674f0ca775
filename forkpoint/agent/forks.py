"""Every fork the agent makes goes through ``fork()``; any other is the user's (a bare
``os.fork()`` in an input, multiprocessing's fork start method).

A child of the user's shares the head's connection to the controller: left alone, it would go
back to the head's loop when the input's code returns and answer the next inputs in turn with
the head, and it would keep the connection open after the head died (the controller would
never see the head's EOF). So in such a child the connection's fd becomes /dev/null at once,
and when the code of the input that forked it returns to the agent, the child exits, as a
child of a script would at its end.

Imported by the agent: standard library only.
"""

from __future__ import annotations

import ctypes
import os

from forkpoint.agent import native

__all__ = ["fork", "fork_sibling", "is_users_child", "watch_connection"]

_ours = False  # set around the agent's own forks
_connection = -1  # the fd of the head's connection, which a user's child must not hold
_users_child = False


def fork() -> int:
    """``os.fork()`` for the agent itself: its child keeps the connection. Native runtimes
    whose pools a fork breaks release their workers first (``native``)."""
    global _ours
    native.before_fork()
    _ours = True
    try:
        return os.fork()
    finally:
        _ours = False


def fork_sibling() -> int | None:
    """A fork whose parent is our parent (``clone(CLONE_PARENT)``), for a parked checkpoint
    making a new head: its parent is the controller (or the old head, which is being killed,
    so the controller soon), and one copy of the page tables is made, where a double fork
    made two (and waited for the middle process to tear its copy down). None where this
    cannot be done safely: not x86-64, or glibc's thread descriptor not as expected.

    Python has no clone(), so it is the raw syscall with what ``os.fork()`` does around it:
    ``PyOS_BeforeFork``/``PyOS_AfterFork_*`` (the at-fork hooks run), and the thread id glibc
    caches in its descriptor set in the child by the kernel (CLONE_CHILD_SETTID). What glibc's
    fork() does besides (its locks, the pthread_atfork handlers) is moot in a parked
    checkpoint: one thread, which already went through them when it was forked."""
    global _ours
    tid_at = _tid_address()
    if tid_at is None:
        return None
    native.before_fork()
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    _ours = True
    try:
        flags = _CLONE_PARENT | _CLONE_CHILD_SETTID | _SIGCHLD
        pid = int(_libc().syscall(_SYS_CLONE, flags, 0, None, tid_at, 0))
    finally:
        _ours = False
    if pid == 0:
        _ours = True
        try:
            api.PyOS_AfterFork_Child()
        finally:
            _ours = False
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        return None
    return pid


_SYS_CLONE, _SYS_GETTID = 56, 186  # x86-64
_CLONE_PARENT, _CLONE_CHILD_SETTID, _SIGCHLD = 0x8000, 0x01000000, 17
_GLIBC_TID_OFFSET = 720  # where glibc (2.26 on, x86-64) keeps a thread's id in its descriptor


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.pthread_self.restype = ctypes.c_void_p
    return libc


def _tid_address() -> ctypes.c_void_p | None:
    """The address of this thread's id in glibc's descriptor of it, checked: the known offset
    if it holds gettid(), else the one offset in the first 2 KiB that does; None if not glibc on
    x86-64 or no single offset holds it."""
    if os.uname().machine != "x86_64" or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        return None
    libc = _libc()
    me, tid = libc.pthread_self(), libc.syscall(_SYS_GETTID)
    if ctypes.c_int.from_address(me + _GLIBC_TID_OFFSET).value == tid:
        return ctypes.c_void_p(me + _GLIBC_TID_OFFSET)
    offsets = [o for o in range(0, 2048, 4) if ctypes.c_int.from_address(me + o).value == tid]
    return ctypes.c_void_p(me + offsets[0]) if len(offsets) == 1 else None


def watch_connection(fd: int) -> None:
    """``fd`` is the head's connection now (a new head, a restored one)."""
    global _connection, _users_child
    _connection, _users_child = fd, False


def is_users_child() -> bool:
    """Whether this process was forked by the user's code from a head."""
    return _users_child


def _after_fork_in_child() -> None:
    global _users_child
    if _ours or _connection < 0:
        return
    _users_child = True
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, _connection)
        os.close(null)
    except OSError:
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)
