"""The head: the one live process that runs user code, serving its controller's requests.

The head's stdio is the user's terminal, so ``print``, ``input()`` and ``breakpoint()``
behave as in plain Python. Errors in user code are data in the reply (status and
traceback); the head itself never dies from them.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from forkpoint.agent import namespace, snapshot
from forkpoint.protocol import Message

__all__ = ["main", "run_input"]


def main() -> None:
    """Entry point of ``python -m forkpoint.agent``, spawned by a controller."""
    path = os.environ.pop("FORKPOINT_SOCKET")
    controller = int(os.environ.pop("FORKPOINT_CONTROLLER"))
    _fresh_main()
    snapshot.activate(path, controller)
    serve()


def _fresh_main() -> None:
    """Give user code a clean ``__main__``, as the standard REPL has (not this module)."""
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [""]
    if sys.path and sys.path[0] != "":
        sys.path[0] = ""


def user_namespace() -> dict[str, Any]:
    return sys.modules["__main__"].__dict__


def serve() -> None:
    """Answer requests until the controller goes away (EOF), then exit without cleanup."""
    while True:
        try:
            snapshot.arm()
            msg = snapshot.channel().recv()
            if msg is None:
                os._exit(0)
            _HANDLERS[msg["op"]](msg)
        except KeyboardInterrupt:
            continue  # a stray Ctrl-C between inputs: nothing to interrupt


def _on_exec(msg: Message) -> None:
    status, tb, code = run_input(msg["code"], msg["filename"])
    pid = None
    if status == "ok":
        try:
            pid = snapshot.take(at_rest=True)
        except OSError as exc:
            snapshot.notify(f"no checkpoint after this input: fork failed ({exc.strerror}).")
        if pid is None:
            return  # this is a new head, rewound to the checkpoint just taken: not a reply
    snapshot.channel().send(
        {"op": "result", "status": status, "checkpoint_pid": pid, "traceback": tb, "exit_code": code}
    )


def run_input(code: str, filename: str) -> tuple[str, str | None, int | None]:
    """Run one REPL input like the standard REPL; returns (status, traceback, exit code)."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename, "exec")
        compiled = compile(ast.Interactive(body=tree.body), filename, "single")
    except (SyntaxError, ValueError, OverflowError) as exc:
        return "error", "".join(traceback.format_exception_only(type(exc), exc)), None
    try:
        exec(compiled, user_namespace())
    except SystemExit as exc:
        return "exit", None, _exit_code(exc.code)
    except BaseException as exc:
        _flush_stdio()
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        return status, _format_user_exception(exc), None
    finally:
        _flush_stdio()
    return "ok", None, None


def _format_user_exception(exc: BaseException) -> str:
    """The traceback without forkpoint's own frame, and remembered for ``pdb.pm()``."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    exc = exc.with_traceback(tb)
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def _on_eval(msg: Message) -> None:
    try:
        text, ok = repr(eval(msg["expr"], user_namespace())), True
    except BaseException as exc:
        text, ok = "".join(traceback.format_exception_only(type(exc), exc)).strip(), False
    snapshot.channel().send({"op": "value", "ok": ok, "text": text})


def _on_complete(msg: Message) -> None:
    try:
        items = namespace.complete(msg["text"], user_namespace())
    except Exception:
        items = []
    snapshot.channel().send({"op": "completions", "items": items[:500]})


_HANDLERS: dict[str, Callable[[Message], None]] = {
    "exec": _on_exec,
    "eval": _on_eval,
    "complete": _on_complete,
}
