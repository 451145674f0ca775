"""Questions a parked checkpoint answers about its state (``probe``: the names and values of
``__main__``, for ``:diff``), each from a throwaway fork, so the checkpoint itself never runs
user code (a ``__repr__``) and stays as it was taken.

The checkpoint waits for the fork's answer and for the controller at once: a question the
controller gave up on (a timeout, Ctrl-C) ends when the next one comes, its fork killed, and
the checkpoint answers that one. Answers repeat the question's number, so one that crossed
the next question on the way is dropped by the controller.

Imported by the agent: standard library only.
"""

from __future__ import annotations

import os
import select
import signal
import sys

from forkpoint.agent import forks, namespace
from forkpoint.channel import Channel
from forkpoint.protocol import Message, encode

__all__ = ["probe"]

EOF_MESSAGE: Message = {"op": "exit"}  # what the controller going away reads as


def probe(ch: Channel, ask: int | None) -> Message | None:
    """Answer a ``probe`` from a fork; the question that came meanwhile, if one did."""
    out, into = os.pipe()
    pid = forks.fork()
    if pid == 0:
        try:
            os.close(out)
            names = namespace.fingerprints(sys.modules["__main__"].__dict__)
            frame = encode({"op": "summary", "names": names, **({} if ask is None else {"ask": ask})})
            with os.fdopen(into, "wb") as pipe:
                pipe.write(frame)
        finally:
            os._exit(0)
    os.close(into)
    answer = bytearray()
    try:
        while True:
            waiting = ch.buffered()
            if waiting:
                return _give_up(pid, waiting[0])
            ready = select.select([out, ch.fileno()], [], [])[0]
            if out in ready:
                chunk = os.read(out, 1 << 16)
                if not chunk:
                    break
                answer += chunk
            else:
                messages, eof = ch.read_ready()
                if messages or eof:
                    return _give_up(pid, messages[0] if messages else EOF_MESSAGE)
    finally:
        os.close(out)
        _reap(pid)
    if answer:  # a fork that died answering (a segfaulting repr) leaves the question unanswered
        try:
            ch.sock.sendall(bytes(answer))
        except OSError:
            return EOF_MESSAGE
    return None


def _give_up(pid: int, message: Message) -> Message:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return message


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
