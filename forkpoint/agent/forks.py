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

import os

__all__ = ["fork", "is_users_child", "watch_connection"]

_ours = False  # set around the agent's own forks
_connection = -1  # the fd of the head's connection, which a user's child must not hold
_users_child = False


def fork() -> int:
    """``os.fork()`` for the agent itself: its child keeps the connection."""
    global _ours
    _ours = True
    try:
        return os.fork()
    finally:
        _ours = False


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
