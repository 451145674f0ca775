"""Unix-socket transport: framed messages, peer credentials, the private runtime dir.

Rules kept here:

* The listening socket lives in a directory created with mode 0700 and owned by this user,
  so no other user can even reach it; every accepted peer is still checked with
  ``SO_PEERCRED`` (same uid, and the pid it claims in its hello).
* A closed connection reads as ``None`` (EOF). Agents treat EOF as "the controller is
  gone" and exit; the controller treats it as "that agent is gone".

Imported by the agent: standard library only.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from forkpoint.errors import ProtocolError
from forkpoint.protocol import HEADER, MAX_FRAME, MAX_MESSAGE, MORE, Message, decode, encode

__all__ = ["Channel", "PeerCredentials", "connect", "listen", "peer_credentials", "private_dir"]

_UCRED = struct.Struct("3i")


class PeerCredentials:
    """pid, uid and gid of the process at the other end of a Unix socket."""

    __slots__ = ("gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Ask the kernel who is connected (it records this at connect time; it cannot be forged)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return PeerCredentials(*_UCRED.unpack(raw))


def private_dir(path: str) -> str:
    """Create ``path`` (and parents) as a 0700 directory owned by us, or refuse to use it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or not os.path.isdir(path) or os.path.islink(path):
        raise PermissionError(f"{path} is not a directory owned by this user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


class Channel:
    """One framed, bidirectional connection. Not thread-safe; one owner at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._parts: list[bytes] = []  # the frames of a message chunked over several, so far
        self._parts_size = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: Message) -> bool:
        """Send one message; False when the peer is gone."""
        try:
            self.sock.sendall(encode(msg))
        except (BrokenPipeError, ConnectionResetError, OSError):
            return False
        return True

    def recv(self, timeout: float | None = None) -> Message | None:
        """Next message, or None at EOF. Raises TimeoutError when ``timeout`` runs out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self._take_frame()
            if msg is not None:
                return msg
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    raise TimeoutError("no message from peer")
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                return None
            self._buf += chunk

    def buffered(self) -> list[Message]:
        """Complete messages already read (a ``recv`` can read past the frame it returns)."""
        messages = []
        while (msg := self._take_frame()) is not None:
            messages.append(msg)
        return messages

    def fill(self) -> bool:
        """After select() said readable: read once into the buffer; False at EOF."""
        try:
            chunk = self.sock.recv(1 << 16)
        except BlockingIOError:
            return True
        except (ConnectionResetError, OSError):
            chunk = b""
        self._buf += chunk
        return bool(chunk)

    def next_buffered(self) -> Message | None:
        """The first complete message read, leaving the rest for ``recv``/``buffered``."""
        return self._take_frame()

    def read_ready(self) -> tuple[list[Message], bool]:
        """After select() said readable: read once; the complete messages and whether EOF."""
        try:
            chunk = self.sock.recv(1 << 16)
        except BlockingIOError:
            chunk = None
        except (ConnectionResetError, OSError):
            chunk = b""
        if chunk:
            self._buf += chunk
        return self.buffered(), chunk == b""

    def _take_frame(self) -> Message | None:
        while True:
            if len(self._buf) < HEADER.size:
                return None
            (word,) = HEADER.unpack_from(self._buf)
            size = word & ~MORE
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes announced")
            if len(self._buf) < HEADER.size + size:
                return None
            body = bytes(self._buf[HEADER.size : HEADER.size + size])
            del self._buf[: HEADER.size + size]
            if word & MORE:  # a piece of a chunked message: keep it, read the next
                self._parts.append(body)
                self._parts_size += size
                if self._parts_size > MAX_MESSAGE:
                    raise ProtocolError(f"a chunked message of over {MAX_MESSAGE} bytes")
                continue
            if self._parts:
                body = b"".join([*self._parts, body])
                self._parts, self._parts_size = [], 0
            return decode(body)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def listen(path: str) -> socket.socket:
    """A listening Unix socket at ``path``, inside a private dir the caller created."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def connect(path: str) -> Channel:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.connect(path)
    return Channel(sock)
