"""The head link: the one live head's process and channel, its request/reply, the handlers
for what it sends on its own, and its life (started, forked from a checkpoint, killed,
buried).

The head sends four things unasked: ``taken`` (a checkpoint it forked), ``module`` (the
source of a user module it imported), ``notice`` (something to show; it waits for ``noted``,
so the notice sits between its output before and after) and, in reply to a request, one of
``result``, ``completions`` or ``value``. Handlers for the first two are the owners' (the
checkpoint pool, the script); notices become events here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from forkpoint.channel import Channel
from forkpoint.controller.events import (
    CodeSwapped,
    CudaInUse,
    Event,
    FilesRewound,
    HeadNotice,
    NoCheckpoint,
    ThreadsLeftOut,
    UnsafePool,
)
from forkpoint.controller.hub import Hub
from forkpoint.controller.pool import CheckpointPool
from forkpoint.controller.supervisor import Death, Supervisor, is_alive
from forkpoint.errors import ForkpointError, ProtocolError
from forkpoint.protocol import Message
from forkpoint.tree import Checkpoint, CheckpointState

__all__ = ["HeadLink"]

REPLIES = ("result", "completions", "value", "written")


def notice_event(msg: Message) -> Event:
    """A head's notice as an event."""
    names = tuple(str(n) for n in msg.get("names") or ())
    kind = msg.get("kind")
    if kind == "swapped":
        return CodeSwapped(names)
    if kind == "threads":
        return ThreadsLeftOut(names, tuple(str(p) for p in msg.get("pools") or ()))
    if kind == "unsafe_pool":
        return UnsafePool(names[0] if names else "")
    if kind == "cuda":
        return CudaInUse()
    if kind == "no_checkpoint":
        return NoCheckpoint(names[0] if names else "")
    return HeadNotice(str(msg.get("text") or kind or ""))


class HeadLink:
    """The live head, if any. ``gone`` is set as soon as its connection ends."""

    def __init__(
        self,
        hub: Hub,
        supervisor: Supervisor,
        pool: CheckpointPool,
        handlers: dict[str, Callable[[Message], None]],
        emit: Callable[[Event], None],
        before_notice: Callable[[], None],
    ) -> None:
        self._hub = hub
        self._supervisor = supervisor
        self._pool = pool
        self._handlers = handlers
        self._emit = emit
        self._before_notice = before_notice
        self.pid: int | None = None
        self._channel: Channel | None = None
        self.gone = False
        self._reply: Message | None = None
        self.pools: tuple[str, ...] = ()  # native pools this head lost for good (its hello's)
        hub.add_source(self)

    # ----------------------------------------------------------------- requests

    @property
    def present(self) -> bool:
        """A head is attached and, as far as we know, alive."""
        return self.pid is not None and not self.gone and is_alive(self.pid)

    def send(self, msg: Message) -> bool:
        if self._channel is None or not self._channel.send(msg):
            self.gone = True
            return False
        return True

    def await_reply(
        self, op: str, timeout: float | None = None, between: Callable[[], None] | None = None
    ) -> Message | None:
        """Pump until the head replies with ``op``; None if it died first or ``timeout``
        passed. ``between`` runs after every pump (the Ctrl-C machine)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._reply is not None:
                reply, self._reply = self._reply, None
                if reply["op"] != op:
                    raise ProtocolError(f"expected {op}, got {reply['op']}")
                return reply
            if self.pid is None or self.gone:
                return None
            if deadline is not None and time.monotonic() > deadline:
                return None
            self._hub.pump(0.2)
            if between is not None:
                between()

    # ----------------------------------------------------------------- the hub's source

    def fileno(self) -> int | None:
        return self._channel.fileno() if self._channel is not None and not self.gone else None

    def pending(self) -> bool:
        if self._channel is None:
            return False
        early = self._channel.buffered()  # frames that arrived with the head's hello
        for msg in early:
            self._on_message(msg)
        return bool(early)

    def serve(self, readable: bool) -> None:
        if not readable or self._channel is None:
            return
        channel = self._channel
        messages, eof = channel.read_ready()
        for msg in messages:
            self._on_message(msg)
        if channel is self._channel:
            self.gone = self.gone or eof

    def quiet(self) -> None:
        if self.pid is not None and not is_alive(self.pid):
            self.gone = True  # died while a child of its own still holds the connection open

    def _on_message(self, msg: Message) -> None:
        op = msg["op"]
        if op in REPLIES:
            self._reply = msg
        elif op == "notice":
            self._before_notice()
            self._emit(notice_event(msg))
            self.send({"op": "noted"})  # the head waits: output stays in order
        elif op in self._handlers:
            self._handlers[op](msg)
        else:
            raise ProtocolError(f"head sent {op}")

    # ----------------------------------------------------------------- life

    def attach(self, pid: int, channel: Channel) -> None:
        self._supervisor.watch(pid)
        self.pid, self._channel, self.gone, self._reply = pid, channel, False, None
        self.pools = ()

    def start(self, pid: int) -> None:
        """The first head, spawned by the supervisor: wait for its hello."""
        arrival = self._hub.await_arrival(lambda h: h["role"] == "head" and h["pid"] == pid, pid)
        self.attach(pid, arrival.channel)

    def fork_from(
        self,
        node: Checkpoint,
        resume: Message | None,
        fg_pgid: int,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """A new head forked from ``node`` (which must be parked) replaces this one.

        The head it replaces is killed once the new one has said hello, not before: its
        teardown (unmapping a big process costs about what forking it does) would compete
        with the fork for the CPU and for the same pages' counts, and if the fork fails the
        user keeps the head they had. ``meanwhile`` runs while the checkpoint forks, the old
        head still attached (a question for it costs the rewind nothing).

        A checkpoint on disk that is restored lazily becomes the head itself and stays on
        disk: a fork would have the lazy-pages daemon fill the memory of both, one copy each,
        and the next use restores it again (a fraction of a second)."""
        become = node.state is CheckpointState.LAZY_ON_DISK
        op = "become_head" if become else "fork_head"
        self._pool.send(node, {"op": op, "fg_pgid": fg_pgid, "resume": resume})
        if become:
            self._pool.release(node)
        if meanwhile is not None:
            meanwhile()
        try:
            arrival = self._hub.await_arrival(
                lambda h: h["role"] == "head" and h["origin"] == node.pid, node.pid
            )
        except ForkpointError:
            self._pool.lost(node)
        self.kill(wait=False)
        self.attach(int(arrival.hello["pid"]), arrival.channel)
        self.pools = tuple(str(p) for p in arrival.hello.get("pools") or ())
        files = arrival.hello.get("files")
        if isinstance(files, dict):
            rewound = tuple(str(p) for p in files.get("rewound") or ())
            kept = tuple(str(p) for p in files.get("kept") or ())
            self._emit(FilesRewound(rewound, kept))

    def kill(self, wait: bool = True) -> None:
        """SIGKILL the head (reaped now, or later: see ``Supervisor.kill``)."""
        pid, channel = self.pid, self._channel
        self.pid, self._channel = None, None
        if pid is None:
            return
        self._supervisor.kill(pid, wait=2.0 if wait else None)
        if channel is not None:
            channel.close()

    def bury(self) -> Death:
        """The head is gone: reap it and say how it died."""
        assert self.pid is not None
        pid, channel = self.pid, self._channel
        self.pid, self._channel = None, None
        if channel is not None:
            channel.close()
        return self._supervisor.bury(pid)

    def foreground(self) -> bool:
        """Whether the head is in our terminal's foreground process group (a restored one is
        not: Ctrl-C must be passed on to it)."""
        if self.pid is None:
            return True
        try:
            return os.getpgid(self.pid) == os.getpgrp()
        except ProcessLookupError:
            return True
