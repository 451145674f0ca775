"""Messages between the controller and the agents: framing, schema and version.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one
object with an ``op`` field. Both sides check every message against ``SCHEMA`` before acting
on it, so a confused or hostile peer produces a ``ProtocolError``, never a half-handled
message. Nothing here unpickles: JSON carries only plain data.

This module is imported by the agent, so it uses the standard library only.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from forkpoint.errors import ProtocolError

__all__ = [
    "INLINE_PATH",
    "MAX_FRAME",
    "MAX_MESSAGE",
    "MORE",
    "PROTOCOL_VERSION",
    "SCHEMA",
    "Message",
    "decode",
    "encode",
    "validate",
]

PROTOCOL_VERSION = 1
INLINE_PATH = "<string>"  # ``run``'s path for a program given with -c, as python names it
MAX_FRAME = 64 * 1024 * 1024
MAX_MESSAGE = 1 << 30  # a message over several frames (a notebook's big figure): at most 1 GiB
MORE = 0x80000000  # in a frame's header: its body goes on in the next frame
HEADER = struct.Struct(">I")

Message = dict[str, Any]

# op -> {field: accepted types}. Fields not listed are rejected, so typos fail loudly.
_STR = (str,)
_INT = (int,)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    # agent -> controller
    "hello": {
        "role": _STR,
        "pid": _INT,
        "version": _INT,
        "origin": _OPT_INT,
        "secret": _OPT_STR,
        "files": (dict, type(None)),  # a new head: files it cut back to the checkpoint, or could not
        "pools": (list, type(None)),  # a new head: native pools it lost for good (agent/native.py)
    },
    "taken": {
        "pid": _INT,
        "label": _OPT_STR,
        "at_rest": (bool,),
        "site": _OPT_INT,
        "called": (list,),
        "entry": _OPT_STR,
        "line": _OPT_INT,
        "call": _OPT_INT,
        "outer": (list,),
        "skipped": _OPT_INT,  # hits of sites in functions that took no checkpoint since the last one
    },
    # kind: swapped, threads, cuda, no_checkpoint (names: what it concerns); text: from an
    # agent of an older forkpoint, which said its notices in words
    "notice": {
        "kind": _OPT_STR,
        "names": (list, type(None)),
        "text": _OPT_STR,
        "pools": (list, type(None)),  # threads: native pools loaded (a thread inside one defeats its reset)
    },
    "module": {"name": _STR, "path": _STR, "source": _STR},
    "candidate": {"pid": _INT, "ask": _INT},
    "result": {
        "status": _STR,
        "checkpoint_pid": _OPT_INT,
        "traceback": _OPT_STR,
        "exit_code": _OPT_INT,
        "skipped": _OPT_INT,  # a run's: hits that took no checkpoint since the last one
    },
    "completions": {"items": (list,)},
    # a notebook head's rich output: display_data, update_display_data, execute_result,
    # clear_output, error (data: ename, evalue, traceback); sent after its output is flushed
    "display": {
        "kind": _STR,
        "data": (dict,),
        "metadata": (dict, type(None)),
        "transient": (dict, type(None)),
    },
    "input_request": {"prompt": _STR, "password": (bool,)},  # input() in a notebook head
    # a Jupyter comm message (ipywidgets), both ways: comm_open, comm_msg, comm_close;
    # buffers in base64. To the head it is a request, answered with a value.
    "comm": {
        "msg_type": _STR,
        "content": (dict,),
        "metadata": (dict, type(None)),
        "buffers": (list, type(None)),
    },
    "written": {"paths": (list,)},  # reply: files the head opened for writing since ``since``
    "value": {"ok": (bool,), "text": _STR},
    "summary": {"names": (dict,), "ask": _INT},
    # controller -> agent
    "exec": {"code": _STR, "filename": _STR, "checkpoint": (bool, type(None))},  # False: take none
    "eval": {"expr": _STR},
    "complete": {"text": _STR},
    "fork_head": {"fg_pgid": _INT, "resume": (dict, type(None))},
    "become_head": {"fg_pgid": _INT, "resume": (dict, type(None))},
    "run": {
        "path": _STR,
        "source": _STR,
        "argv": (list,),
        "entries": (list,),
        "lines": (dict,),
        "watch": (list,),
        "argv0": _OPT_STR,  # sys.argv[0] as the user typed the script's path
        "module": _OPT_STR,  # run as python -m this module
        "stop_in_tests": (bool,),  # under pytest: stop at a failing test, checkpoint before each
        "every_hit": (bool,),  # a checkpoint at every hit of a site in a function (no spacing)
    },
    "pm_exec": {"code": _STR, "frame": _INT},
    "frame": {"index": _INT},
    "probe": {"ask": _INT},  # ask: the question's number, which its answer repeats
    "files_written": {"since": (int, float)},  # which files the head opened for writing since then
    "save": {"attach": _STR, "secret": _STR, "ask": _INT},
    "noted": {},
    "input_reply": {"value": _OPT_STR},  # None: no answer (EOFError in the head)
    # a notebook head's questions: complete, inspect, is_complete; answered with a value (JSON)
    "shell_ask": {"kind": _STR, "code": _STR, "cursor_pos": _INT, "detail_level": _INT},
    "exit": {},
}


def validate(msg: object) -> Message:
    """Return ``msg`` if it is a well-formed message, else raise ``ProtocolError``."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"message is a {type(msg).__name__}, not an object")
    op = msg.get("op")
    fields = SCHEMA.get(op) if isinstance(op, str) else None
    if fields is None:
        raise ProtocolError(f"unknown op {op!r}")
    for name, value in msg.items():
        if name == "op":
            continue
        allowed = fields.get(name)
        if allowed is None:
            raise ProtocolError(f"{op}: unexpected field {name!r}")
        # bool is an int subclass; keep them apart so a flag never passes as a pid.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ProtocolError(f"{op}: field {name!r} has type {type(value).__name__}")
    missing = [name for name, allowed in fields.items() if name not in msg and type(None) not in allowed]
    if missing:
        raise ProtocolError(f"{op}: missing {', '.join(missing)}")
    return msg


def encode(msg: Message) -> bytes:
    """Frame one message; validates first so a bug shows at the sender."""
    body = json.dumps(validate(msg), separators=(",", ":")).encode()
    if len(body) <= MAX_FRAME:
        return HEADER.pack(len(body)) + body
    if len(body) > MAX_MESSAGE:
        raise ProtocolError(f"{msg['op']}: a message of {len(body)} bytes is too large")
    frames = []
    for start in range(0, len(body), MAX_FRAME):  # chunked: each frame's header says if more follow
        piece = body[start : start + MAX_FRAME]
        more = MORE if start + MAX_FRAME < len(body) else 0
        frames.append(HEADER.pack(len(piece) | more) + piece)
    return b"".join(frames)


def decode(body: bytes) -> Message:
    """Parse and check one frame body."""
    try:
        msg = json.loads(body.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    return validate(msg)
