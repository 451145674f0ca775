"""What a notebook head sends besides the REPL's messages, relayed to the front end: its
rich output (``display`` becomes a ``Display`` event), its ``input()`` (asked of the front
end's ``on_input``, answered with ``input_reply``), and the questions the front end asks of its
IPython shell (completion, inspection, whether a cell is complete).

The answers are JSON the head wrote; nothing from the head is ever unpickled.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from forkpoint.controller.driver import Driver
from forkpoint.controller.events import CommMessage, Display, DisplayKind, Event
from forkpoint.errors import ForkpointError
from forkpoint.protocol import Message

__all__ = ["AskInput", "NotebookRelay"]

AskInput = Callable[[str, bool], "str | None"]  # (prompt, password) -> the line, or None
ASK_TIMEOUT = 10.0  # seconds a completion or inspection may take in the head


class NotebookRelay:
    def __init__(self, driver: Driver, emit: Callable[[Event], None], on_input: AskInput | None) -> None:
        self._driver = driver
        self._emit = emit
        self._on_input = on_input

    def handlers(self) -> dict[str, Callable[[Message], None]]:
        return {"display": self._on_display, "input_request": self._on_input_request, "comm": self._on_comm}

    def _on_comm(self, msg: Message) -> None:
        buffers = tuple(base64.b64decode(b) for b in msg.get("buffers") or ())
        self._emit(
            CommMessage(str(msg["msg_type"]), dict(msg["content"]), dict(msg.get("metadata") or {}), buffers)
        )

    def relay_comm(
        self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any], buffers: list[bytes]
    ) -> None:
        """A front end's comm message, handled by the head's comm manager (between cells)."""
        msg = {
            "op": "comm",
            "msg_type": msg_type,
            "content": content,
            "metadata": metadata,
            "buffers": [base64.b64encode(b).decode("ascii") for b in buffers],
        }
        if self._driver.request(msg, "value", timeout=ASK_TIMEOUT) is None:
            raise ForkpointError(f"the head did not take the {msg_type}.")

    def _on_display(self, msg: Message) -> None:
        self._emit(
            Display(
                DisplayKind(msg["kind"]),
                dict(msg["data"]),
                dict(msg.get("metadata") or {}),
                dict(msg.get("transient") or {}),
            )
        )

    def _on_input_request(self, msg: Message) -> None:
        value = None if self._on_input is None else self._on_input(str(msg["prompt"]), bool(msg["password"]))
        self._driver.head.send({"op": "input_reply", "value": value})

    def ask(self, kind: str, code: str, cursor_pos: int, detail_level: int = 0) -> dict[str, Any]:
        """The head's IPython shell's answer (a Jupyter reply's content)."""
        question = {
            "op": "shell_ask",
            "kind": kind,
            "code": code,
            "cursor_pos": cursor_pos,
            "detail_level": detail_level,
        }
        reply = self._driver.request(question, "value", timeout=ASK_TIMEOUT)
        if reply is None or not reply["ok"]:
            raise ForkpointError(f"the head did not answer the {kind} request.")
        answer = json.loads(str(reply["text"]))
        if not isinstance(answer, dict):
            raise ForkpointError(f"the head's {kind} answer is not an object.")
        return answer
