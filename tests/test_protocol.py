"""Pure tests of framing and schema checks."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkpoint.channel import Channel
from forkpoint.errors import ProtocolError
from forkpoint.protocol import HEADER, MAX_FRAME, MAX_MESSAGE, MORE, decode, encode, validate


def test_round_trip_through_a_socket_pair() -> None:
    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    msgs = [
        {"op": "exec", "code": "x = 'é'\n", "filename": "<input-1>"},
        {"op": "taken", "pid": 12, "label": None, "at_rest": True, "site": None, "called": [], "outer": []},
        {"op": "result", "status": "ok", "checkpoint_pid": None, "traceback": None, "exit_code": None},
    ]
    for m in msgs:
        assert left.send(m)
    assert [right.recv(timeout=1) for _ in msgs] == msgs
    left.close()
    assert right.recv(timeout=1) is None  # EOF
    right.close()


@pytest.mark.parametrize(
    "msg, error",
    [
        ([], "not an object"),
        ({"op": "nope"}, "unknown op"),
        ({"op": "exec", "code": "x"}, "missing filename"),
        ({"op": "exec", "code": 1, "filename": "f"}, "type int"),
        ({"op": "taken", "pid": True, "label": None, "at_rest": True, "called": []}, "type bool"),
        ({"op": "probe", "extra": 1}, "unexpected field"),
    ],
)
def test_bad_messages_are_refused(msg: object, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        validate(msg)


def test_garbage_frame_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        decode(b"\x80not json")


def test_oversized_announcement_is_refused() -> None:
    a, b = socket.socketpair()
    a.sendall(HEADER.pack(MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match="announced"):
        Channel(b).recv(timeout=1)
    a.close()
    b.close()


@given(st.text(), st.text())
def test_any_text_round_trips(code: str, filename: str) -> None:
    msg = {"op": "exec", "code": code, "filename": filename}
    frame = encode(msg)
    assert decode(frame[HEADER.size :]) == msg


def test_frames_read_along_with_an_earlier_one_are_kept() -> None:
    a, b = socket.socketpair()
    first = {"op": "hello", "role": "head", "pid": 1, "version": 1, "origin": None}
    second = {"op": "notice", "text": "x"}
    a.sendall(encode(first) + encode(second))  # one write: one recv reads both
    ch = Channel(b)
    assert ch.recv(timeout=1) == first
    assert ch.buffered() == [second]  # select() would never report it: it is already read
    a.close()
    b.close()


def test_a_message_over_the_frame_limit_is_chunked_and_put_back_together() -> None:
    """A notebook's 150 MB figure: three frames, each saying that more follows but the last,
    read back as one message between two small ones (a reader in a thread: the socket's
    buffer holds far less than a frame)."""
    import threading

    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    big = {
        "op": "display",
        "kind": "display_data",
        "data": {"text/html": "é" * 75_000_000},
        "metadata": None,
        "transient": None,
    }
    small = {"op": "noted"}
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.extend(right.recv(timeout=60) for _ in range(3)))
    reader.start()
    assert left.send(small) and left.send(big) and left.send(small)
    reader.join(60)
    assert got == [small, big, small]
    assert len(encode(big)) > 2 * MAX_FRAME
    left.close()
    right.close()


def test_a_chunked_message_over_the_message_limit_is_refused() -> None:
    a, b = socket.socketpair()
    right = Channel(b)
    frame = HEADER.pack(MAX_FRAME | MORE)
    right._parts_size = MAX_MESSAGE  # as if that much had come already
    right._buf += frame + b"x" * MAX_FRAME
    with pytest.raises(ProtocolError):
        right.recv(timeout=1)
    a.close()
    right.close()
