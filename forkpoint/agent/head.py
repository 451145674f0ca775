"""The head: the one live process that runs user code, serving its controller's requests.

The head's stdio is the user's terminal, so ``print``, ``input()`` and ``breakpoint()``
behave as in plain Python. Errors in user code are data in the reply (status and
traceback); the head itself never dies from them.
"""

from __future__ import annotations

import ast
import importlib
import linecache
import os
import signal
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NoReturn

from forkpoint import paths
from forkpoint.agent import forks, namespace, opened, pacing, process_state, runner, snapshot
from forkpoint.protocol import Message

__all__ = ["flush_stdio", "main", "run_input", "stop_at_failure", "use"]

SETUP_PREFIX = "forkpoint."  # FORKPOINT_HEAD_SETUP names a module of ours, never the user's


def main() -> None:
    """Entry point of ``python -m forkpoint.agent``, spawned by a controller."""
    path = os.environ.pop("FORKPOINT_SOCKET")
    controller = int(os.environ.pop("FORKPOINT_CONTROLLER"))
    setup = os.environ.pop("FORKPOINT_HEAD_SETUP", "")
    if os.environ.pop("FORKPOINT_OUTPUT", "") == "pipes":
        process_state.use_pipes()
    # Ctrl-C interrupts the user's code even where the controller's process ignores SIGINT
    # (a Jupyter kernel does): an ignored signal stays ignored across exec, and Python then
    # installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _fresh_main()
    opened.install(paths.cache_dir(), os.path.dirname(os.path.dirname(path)))  # the runtime root
    snapshot.activate(path, controller)
    if setup.startswith(SETUP_PREFIX):  # a front end's head side (the notebook kernel's shell)
        importlib.import_module(setup).setup()
    serve()


def use(
    runner: Callable[[str, str], tuple[str, str | None, int | None]],
    handlers: dict[str, Callable[[Message], None]],
) -> None:
    """A front end's head side runs inputs its own way (``runner``, in place of
    ``run_input``) and answers ops of its own; checkpoints, rewinds and roll-backs stay ours."""
    global _runner
    _runner = runner
    _HANDLERS.update(handlers)


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
    status, tb, code = _runner(msg["code"], msg["filename"])
    pid = None
    if status == "ok" and msg.get("checkpoint") is not False:  # a notebook's silent request: none
        try:
            pid = snapshot.take(at_rest=True)
        except OSError as exc:
            snapshot.notify("no_checkpoint", [exc.strerror or str(exc)])
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
    return run_code(compiled, user_namespace())


def run_code(code: Any, ns: dict[str, Any]) -> tuple[str, str | None, int | None]:
    """Run user code; errors become (status, traceback) data, never forkpoint exceptions."""
    try:
        return _run_code(code, ns)
    finally:
        if forks.is_users_child():  # the user's code forked and this child came back here
            flush_stdio()
            os._exit(0)


def _run_code(code: Any, ns: dict[str, Any]) -> tuple[str, str | None, int | None]:
    try:
        exec(code, ns)
    except SystemExit as exc:
        return "exit", None, _exit_code(exc.code)
    except runner.Finished:
        return "exit", None, 0
    except BaseException as exc:
        flush_stdio()
        if isinstance(exc, runner.RemainderFailed):
            error: BaseException = exc.error
            if isinstance(error, SystemExit):
                return "exit", None, _exit_code(error.code)
        else:
            error = exc.with_traceback(exc.__traceback__.tb_next if exc.__traceback__ else None)
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "error"
        return status, _format_user_exception(error), None
    finally:
        flush_stdio()
    return "ok", None, None


def _format_user_exception(exc: BaseException) -> str:
    """The traceback, remembered for ``pdb.pm()`` and post-mortem evaluation."""
    tb = _user_frames(exc.__traceback__)
    exc = exc.with_traceback(tb)
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without forkpoint's own frames (the runner, its sites) and without old
    frames that only pass on what their call's new code raised; a fresh run has neither."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    kept = [
        t
        for t in entries
        if not t.tb_frame.f_code.co_filename.startswith(here) and not runner.is_passing(t.tb_frame)
    ] or entries[-1:]
    rebuilt = None
    for t in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return rebuilt


def _exit_code(code: object) -> int:
    """What ``sys.exit(code)`` makes python exit with: None -> 0, an int (False and True
    included: ``unittest.main()`` exits with a bool) -> itself, anything else printed -> 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code)
    print(code, file=sys.stderr)
    return 1


def flush_stdio() -> None:
    """Flush before a message (and, in pipes mode, wait until it has all been read: see
    ``process_state.settle``)."""
    process_state.settle()


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


def _on_run(msg: Message) -> None:
    code, ns = runner.prepare(
        msg["path"],
        msg["source"],
        [str(a) for a in msg["argv"]],
        frozenset(str(e) for e in msg["entries"]),
        {str(p): frozenset(int(n) for n in ns) for p, ns in msg["lines"].items()},
        tuple(str(w) for w in msg["watch"]),
        msg.get("argv0"),
        msg.get("module"),
        bool(msg.get("stop_in_tests")),
    )
    pacing.every_hit = bool(msg.get("every_hit"))
    status, tb, exit_code = run_code(code, ns)
    if status == "ok":
        status, exit_code = "exit", 0  # the script ran to its end
    snapshot.channel().send(
        {
            "op": "result",
            "status": status,
            "checkpoint_pid": None,
            "traceback": tb,
            "exit_code": exit_code,
            "skipped": pacing.skipped,  # hits not checkpointed since the last checkpoint
        }
    )


_paused: list[types.FrameType] = []  # in a head paused at a site: its stack, innermost first


def _pause(frame: types.FrameType) -> NoReturn:
    """Stay at a site of the script: inputs run in its frames until the controller replaces
    this head (resume, another rewind)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    current: types.FrameType | None = frame
    while current is not None and not current.f_code.co_filename.startswith(here):
        if not runner.is_passing(current):
            _paused.append(current)
        current = current.f_back
    flush_stdio()
    snapshot.channel().send(
        {"op": "result", "status": "paused", "checkpoint_pid": None, "traceback": None, "exit_code": None}
    )
    serve()
    os._exit(0)


runner.on_pause = _pause


def stop_at_failure(exc: BaseException, text: str, start: str | None = None) -> NoReturn:
    """A failure the program caught and reported (pytest's failed test) stops this head as an
    uncaught error would: post-mortem in its frames, from the first frame in file ``start``
    on, until the controller replaces the head (resume) or ends it. ``text`` is the failure
    as the program reported it."""
    tb = exc.__traceback__
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename != start:
        first = first.tb_next
    tb = first or tb
    exc = exc.with_traceback(tb)
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    flush_stdio()
    snapshot.channel().send(
        {"op": "result", "status": "error", "checkpoint_pid": None, "traceback": text, "exit_code": None}
    )
    serve()
    os._exit(0)


def _failing_frames() -> list[types.FrameType]:
    """Frames of the last failure, innermost first (index 0 is where it was raised)."""
    if _paused:
        return list(_paused)
    frames = []
    tb = getattr(sys, "last_traceback", None)
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames[::-1]


def _on_pm_exec(msg: Message) -> None:
    """Run an input in a frame of the failure (post-mortem), echoing expressions."""
    frames = _failing_frames()
    index = msg["frame"]
    if not 0 <= index < len(frames):
        snapshot.channel().send({"op": "value", "ok": False, "text": "there is no failure to inspect."})
        return
    frame = frames[index]
    try:
        compiled = compile(msg["code"], "<post-mortem>", "single")
        exec(compiled, frame.f_globals, frame.f_locals)
        ok, text = True, ""
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        ok, text = False, "".join(traceback.format_exception(type(exc), exc, tb))
    flush_stdio()
    snapshot.channel().send({"op": "value", "ok": ok, "text": text})


def _on_frame(msg: Message) -> None:
    frames = _failing_frames()
    index = msg["index"]
    if not 0 <= index < len(frames):
        snapshot.channel().send({"op": "value", "ok": False, "text": f"{len(frames)} frames"})
        return
    frame = frames[index]
    summary = traceback.FrameSummary(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
    snapshot.channel().send({"op": "value", "ok": True, "text": "".join(traceback.format_list([summary]))})


def _on_written(msg: Message) -> None:
    snapshot.channel().send({"op": "written", "paths": opened.since(float(msg["since"]))[:200]})


_runner = run_input
_HANDLERS: dict[str, Callable[[Message], None]] = {
    "files_written": _on_written,
    "run": _on_run,
    "pm_exec": _on_pm_exec,
    "frame": _on_frame,
    "exec": _on_exec,
    "eval": _on_eval,
    "complete": _on_complete,
}
