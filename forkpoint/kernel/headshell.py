"""The notebook kernel's head side: cells run in an IPython ``InteractiveShell`` inside the
head, the process that forks. Imported there only, at start (``FORKPOINT_HEAD_SETUP``).

What must not cross a fork is kept out of it: no ZMQ, no thread (IPython's history would save
from a thread into SQLite; here it lives in ``:memory:``), no event loop. What the shell shows
goes to the controller as data over the head's own channel: mime bundles (``display``:
display_data, update_display_data, execute_result, clear_output), the structured traceback of
a failed cell (``display`` kind ``error``), and ``input()`` (``input_request``, answered with
``input_reply``). Before each message the head flushes its streams, so the kernel sees a cell's
printed output and its displays in the order they happened. The matplotlib backend is the
inline one (``MPLBACKEND``, set by the kernel): figures come as PNG bundles.

Checkpoints, roll-backs and rewinds are the agent's as for any head: this module only runs a
cell (``head.use``) and answers the kernel's questions about code (``shell_ask``).
"""

from __future__ import annotations

import base64
import builtins
import getpass
import json
import os
import sys
import traceback
import types
from typing import Any

import comm
from comm.base_comm import BaseComm, CommManager
from IPython.core import page
from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.tokenutil import token_at_cursor
from traitlets.config import Config

from forkpoint.agent import head, snapshot
from forkpoint.kernel import ENGINE_MAGICS
from forkpoint.protocol import Message

__all__ = ["setup"]


def _jsonable(value: Any) -> Any:
    """A mime bundle as JSON: bytes (a PNG) in base64, as Jupyter sends them."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _send(msg: Message) -> None:
    head.flush_stdio()  # what the cell printed before this comes first
    snapshot.channel().send(msg)


def _display(kind: str, data: dict[str, Any], metadata: Any = None, transient: Any = None) -> None:
    _send(
        {
            "op": "display",
            "kind": kind,
            "data": _jsonable(data),
            "metadata": _jsonable(metadata or {}),
            "transient": _jsonable(transient or {}),
        }
    )


class _Publisher(DisplayPublisher):
    def publish(  # type: ignore[override]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        _display("update_display_data" if update else "display_data", data, metadata, transient)

    def clear_output(self, wait: bool = False) -> None:
        _display("clear_output", {"wait": wait})


class _Hook(DisplayHook):
    """The value of a cell's last expression, as an execute_result bundle."""

    _bundle: tuple[dict[str, Any], dict[str, Any]] | None = None

    def start_displayhook(self) -> None:
        self._bundle = None

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
        self._bundle = (format_dict, md_dict or {})

    def finish_displayhook(self) -> None:
        if self._bundle is not None:
            _display("execute_result", *self._bundle)
        self._bundle = None


class _Shell(InteractiveShell):
    displayhook_class = _Hook
    display_pub_class = _Publisher

    def _showtraceback(self, etype: type[BaseException], evalue: BaseException, stb: list[str]) -> None:
        name = getattr(etype, "__name__", str(etype))
        _display("error", {"ename": name, "evalue": str(evalue), "traceback": list(stb)})

    def enable_gui(self, gui: Any = None) -> None:
        pass  # no event loop in a process that forks


def _alone(name: str) -> Any:
    """A stand-in for one of the kernel's magics, for a cell where it comes with other code."""

    def magic(line: str) -> None:
        raise RuntimeError(f"%{name} must be alone in its cell (the kernel runs it, not Python).")

    return magic


class _Comm(BaseComm):
    """A comm whose messages go to the kernel over the head's channel (ipywidgets' state)."""

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        _send(
            {
                "op": "comm",
                "msg_type": msg_type,
                "content": _jsonable({"data": data or {}, "comm_id": self.comm_id, **keys}),
                "metadata": _jsonable(metadata or {}),
                "buffers": [base64.b64encode(bytes(b)).decode("ascii") for b in buffers or ()],
            }
        )


_comms = CommManager()


def _on_comm(msg: Message) -> None:
    """A front end's comm_open, comm_msg or comm_close, as the comm manager takes them."""
    incoming = {
        "header": {"msg_type": msg["msg_type"]},
        "msg_type": msg["msg_type"],
        "content": msg["content"],
        "metadata": msg.get("metadata") or {},
        "buffers": [base64.b64decode(b) for b in msg.get("buffers") or ()],
    }
    handler = {"comm_open": _comms.comm_open, "comm_msg": _comms.comm_msg, "comm_close": _comms.comm_close}
    try:
        handler[str(msg["msg_type"])](None, None, incoming)  # type: ignore[arg-type]
        ok, text = True, ""
    except Exception as exc:  # noqa: BLE001 - a widget's callback must not end the head
        ok, text = False, f"{type(exc).__name__}: {exc}"
    _send({"op": "value", "ok": ok, "text": text})


_shell: _Shell | None = None


def setup() -> None:
    """Make the head's shell and have the agent run cells through it."""
    global _shell
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "Neutral"
    config.InteractiveShell.xmode = "Context"
    _shell = _Shell.instance(config=config, user_module=sys.modules["__main__"])
    _shell.set_hook("show_in_pager", page.as_hook(_page), 99)
    for name in ENGINE_MAGICS:
        _shell.register_magic_function(_alone(name), magic_kind="line", magic_name=name)  # type: ignore[call-arg]
    comm.create_comm = lambda *args, **kwargs: _Comm(*args, **kwargs)
    comm.get_comm_manager = lambda: _comms
    _shell.kernel = types.SimpleNamespace(comm_manager=_comms)  # type: ignore[attr-defined]  # ipywidgets looks
    builtins.input = _input  # type: ignore[assignment]
    getpass.getpass = _password
    # An answer to an input() that was interrupted comes when the head has gone on: dropped.
    head.use(_run_cell, {"shell_ask": _on_ask, "comm": _on_comm, "input_reply": lambda msg: None})


def _page(text: Any, start: int = 0, screen_lines: int = 0, pager_cmd: Any = None) -> None:
    """``?`` and ``%pdoc``: what a terminal pages, a notebook shows from the reply's payload."""
    _display("page", text if isinstance(text, dict) else {"text/plain": str(text)}, {"start": start})


def _run_cell(code: str, filename: str) -> tuple[str, str | None, int | None]:
    """One cell: (status, the error's last line, None), as ``head.run_input`` returns."""
    assert _shell is not None
    result = _shell.run_cell(code, store_history=True)
    head.flush_stdio()
    error = result.error_before_exec or result.error_in_exec
    if error is None:
        return "ok", None, None
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "error"
    return status, "".join(traceback.format_exception_only(type(error), error)), None


def _input(prompt: object = "") -> str:
    return _ask(str(prompt), password=False)


def _password(prompt: str = "Password: ", stream: Any = None) -> str:
    return _ask(prompt, password=True)


def _ask(prompt: str, password: bool) -> str:
    _send({"op": "input_request", "prompt": prompt, "password": password})
    reply = snapshot.channel().recv()
    if reply is None:
        os._exit(0)  # the controller is gone
    value = reply.get("value")
    if value is None:
        raise EOFError("no input: the front end does not take any (allow_stdin is off)")
    return str(value)


def _on_ask(msg: Message) -> None:
    assert _shell is not None
    try:
        answer, ok = (
            _answer(msg["kind"], str(msg["code"]), int(msg["cursor_pos"]), int(msg["detail_level"])),
            True,
        )
    except Exception as exc:  # noqa: BLE001 - a completer's bug must not end the head
        answer, ok = (
            {"status": "error", "ename": type(exc).__name__, "evalue": str(exc), "traceback": []},
            False,
        )
    snapshot.channel().send({"op": "value", "ok": ok, "text": json.dumps(_jsonable(answer))})


def _answer(kind: str, code: str, cursor_pos: int, detail_level: int) -> dict[str, Any]:
    assert _shell is not None
    if kind == "complete":  # as ipykernel does it (IPython's own, with jedi)
        with provisionalcompleter():
            found = list(rectify_completions(code, _shell.Completer.completions(code, cursor_pos)))
        start, end = (found[0].start, found[0].end) if found else (cursor_pos, cursor_pos)
        return {
            "matches": [c.text for c in found],
            "cursor_end": end,
            "cursor_start": start,
            "metadata": {},
            "status": "ok",
        }
    if kind == "inspect":
        name = token_at_cursor(code, cursor_pos)
        try:
            bundle = _shell.object_inspect_mime(name, detail_level=detail_level)
        except KeyError:
            return {"status": "ok", "data": {}, "metadata": {}, "found": False}
        bundle.pop("text/html", None)
        return {"status": "ok", "data": bundle, "metadata": {}, "found": True}
    if kind == "is_complete":
        status, indent = _shell.input_transformer_manager.check_complete(code)
        return {"status": status, **({"indent": " " * (indent or 0)} if status == "incomplete" else {})}
    if kind == "comm_info":  # code: the target name asked about, or "" for all
        comms = {cid: {"target_name": c.target_name} for cid, c in _comms.comms.items()}
        return {"status": "ok", "comms": {k: v for k, v in comms.items() if code in ("", v["target_name"])}}
    raise ValueError(f"no such question: {kind}")
