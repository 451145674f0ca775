"""Pipes mode: the head's stdout and stderr as the engine's ``Output`` events.

In terminal mode the head writes to the terminal's fds itself (``input()``, progress bars and
curses need a real terminal). In pipes mode (a front end with no terminal, such as a notebook
kernel) fds 1 and 2 of the first head are the write ends of two pipes; every checkpoint and
every later head inherits them through fork, so one pair serves the whole tree, restored
sessions included (the write ends travel with the terminal fds by SCM_RIGHTS). The hub drains
the read ends before it handles the head's messages: the head flushes before it sends one,
so what it printed before a message is emitted before what the message causes.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable

from forkpoint.controller.events import Event, Output, Stream

__all__ = ["OutputPipes"]

CHUNK = 1 << 16
READS_PER_PUMP = 16  # a head that writes without pause cannot starve the rest of the loop


class _Reader:
    def __init__(self, stream: Stream, emit: Callable[[Event], None]) -> None:
        self.stream = stream
        self._emit = emit
        self.read_fd, self.write_fd = os.pipe()
        os.set_inheritable(self.read_fd, False)
        os.set_blocking(self.read_fd, False)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def fileno(self) -> int | None:
        return self.read_fd if self.read_fd >= 0 else None

    def pending(self) -> bool:
        return False

    def serve(self, readable: bool) -> None:
        for _ in range(READS_PER_PUMP):
            if self.read_fd < 0:
                return
            try:
                data = os.read(self.read_fd, CHUNK)
            except BlockingIOError:
                return
            if not data:
                return
            text = self._decoder.decode(data)
            if text:
                self._emit(Output(self.stream, text))

    def quiet(self) -> None:
        pass

    def close(self) -> None:
        self.serve(True)
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1


class OutputPipes:
    """The two pipes; ``stdio`` is what the head gets as its fds 0, 1, 2."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self.readers = (_Reader(Stream.STDOUT, emit), _Reader(Stream.STDERR, emit))
        self._null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    @property
    def stdio(self) -> tuple[int, int, int]:
        return (self._null, self.readers[0].write_fd, self.readers[1].write_fd)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        os.close(self._null)
