"""The socket hub: the controller's listening socket, the peer check, arrivals, and the one
``select`` loop.

Every agent (head, checkpoint, restored process) connects here and says ``hello``. The kernel
tells us who connected (SO_PEERCRED): another user's process is refused, and a hello whose pid
is not the connecting process's is dropped. Accepted connections wait as *arrivals* until the
part that expects them (the head link, the checkpoint pool) claims them by what their hello
says.

``pump`` is the only place the controller blocks. It also serves the *sources* other parts
register (the head's channel, the head's output pipes), in the order registered: output
pipes first, so what the head wrote before a message is emitted before that message.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from forkpoint.channel import Channel, peer_credentials
from forkpoint.controller.events import ConnectionRefused, Event
from forkpoint.controller.supervisor import Supervisor, is_alive
from forkpoint.errors import ForkpointError, ProtocolError
from forkpoint.protocol import PROTOCOL_VERSION, Message

__all__ = ["Arrival", "Hub", "Source"]

HELLO_TIMEOUT = 30.0  # seconds an expected process has to connect and say hello
HELLO_WAIT = 5.0  # seconds a connection has to say hello before it is dropped


@dataclass
class Arrival:
    hello: Message
    channel: Channel


class Source(Protocol):
    """Something ``pump`` watches besides the listener."""

    def fileno(self) -> int | None:
        """The fd to select on; None when there is nothing to watch now."""

    def pending(self) -> bool:
        """Handle what was already read (frames that came with a hello); True if any."""

    def serve(self, readable: bool) -> None:
        """Read and handle what is there; called on every pump, readable or not (a pipe is
        drained even when select raced its last write)."""

    def quiet(self) -> None:
        """select timed out with nothing readable."""


class Hub:
    def __init__(self, supervisor: Supervisor, emit: Callable[[Event], None]) -> None:
        self._supervisor = supervisor
        self._emit = emit
        self._listener: socket.socket | None = None
        self._arrivals: dict[int, Arrival] = {}
        self._greeting: dict[int, tuple[Channel, int, float]] = {}  # fd -> (channel, pid, deadline)
        self._sources: list[Source] = []
        self.socket_path = ""

    def adopt(self, listener: socket.socket, path: str) -> str:
        """Serve ``listener``, bound at ``path`` (made by ``launch.prepare``)."""
        self.socket_path, self._listener = path, listener
        return path

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def close(self) -> None:
        """Close every waiting arrival (EOF: a parked agent exits) and the listener."""
        for arrival in self._arrivals.values():
            arrival.channel.close()
        self._arrivals.clear()
        for ch, _, _ in self._greeting.values():
            ch.close()
        self._greeting.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def claim(self, pid: int) -> Channel | None:
        """The connection of ``pid`` if it arrived and nobody claimed it yet."""
        arrival = self._arrivals.pop(pid, None)
        return arrival.channel if arrival else None

    def await_arrival(
        self, match: Callable[[Message], bool], watch: int, timeout: float = HELLO_TIMEOUT
    ) -> Arrival:
        """The first arrival whose hello ``match``es; fails as soon as ``watch`` (the process
        that should connect, or its parent) is gone, else after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for pid, arrival in list(self._arrivals.items()):
                if match(arrival.hello):
                    return self._arrivals.pop(pid)
            if time.monotonic() > deadline or not is_alive(watch):
                self._supervisor.reap()
                raise ForkpointError(f"process {watch} did not connect to the controller.")
            self.pump(0.05)

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for anything: new connections, the sources' data."""
        assert self._listener is not None
        for source in self._sources:
            if source.pending():
                return
        watched = {fd: s for s in self._sources if (fd := s.fileno()) is not None}
        fds: list[int] = [self._listener.fileno(), *watched, *self._greeting]
        ready = set(select.select(fds, [], [], timeout)[0])
        if fds[0] in ready:
            self._accept()
        self._greet(ready)
        for source in self._sources:
            fd = source.fileno()
            source.serve(fd is not None and fd in ready)
        if not ready:
            for source in self._sources:
                source.quiet()
        self._supervisor.reap()

    def _accept(self) -> None:
        """A new connection: another user's is refused at once; ours waits for its hello
        without holding anything up (an idle connection must not stall an input)."""
        assert self._listener is not None
        sock, _ = self._listener.accept()
        creds = peer_credentials(sock)
        ch = Channel(sock)
        if creds.uid != os.getuid():
            self._emit(ConnectionRefused(creds.uid, creds.pid))
            ch.close()
            return
        self._greeting[ch.fileno()] = (ch, creds.pid, time.monotonic() + HELLO_WAIT)

    def _greet(self, ready: set[int]) -> None:
        """Hellos of the connections that sent one; those silent for ``HELLO_WAIT`` are dropped."""
        now = time.monotonic()
        for fd, (ch, pid, deadline) in list(self._greeting.items()):
            open_ = ch.fill() if fd in ready else True
            try:
                hello = ch.next_buffered()
            except ProtocolError:
                hello, open_ = None, False
            if hello is None and open_ and now <= deadline:
                continue  # nothing yet, or half a hello
            del self._greeting[fd]
            if (
                hello is None
                or hello["op"] != "hello"
                or hello["pid"] != pid
                or hello["version"] != PROTOCOL_VERSION
            ):
                ch.close()
                continue
            self._arrivals[pid] = Arrival(hello, ch)
