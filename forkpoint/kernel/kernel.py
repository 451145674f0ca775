"""The notebook kernel: a front end of the engine that speaks Jupyter's protocol.

The process jupyter_client launches is this one, and it never forks: ZMQ sockets, tornado and
ipykernel's threads do not survive a fork (ipykernel's own attempts to fork a kernel failed on
exactly that), and jupyter_client restarts a kernel whose launched process dies, while every
rewind replaces the head. So the kernel owns a ``Controller`` on its main thread, in pipes
mode, and its head runs the cells in an IPython shell (``headshell``). Every cell that
succeeds is a checkpoint; one that fails or is interrupted is rolled back, and says so under
its traceback. A cell that is only the kernel's magics (``magics``) runs here and makes no
checkpoint.

Interrupts: the kernelspec's ``interrupt_mode`` is ``signal``, and jupyter_client signals the
kernel's whole process group, the head included; the kernel ignores SIGINT between cells
(ipykernel's app does) and counts it during one (the controller's Ctrl-C machine: the head is
interrupted, a second interrupt kills it, and either way the cell is rolled back).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Any

from ipykernel.kernelbase import Kernel
from traitlets import Bool

from forkpoint import __version__
from forkpoint.controller import Controller
from forkpoint.controller.controller import Output
from forkpoint.controller.events import (
    CommMessage,
    Display,
    DisplayKind,
    Event,
    InterruptIgnored,
    StalledInPool,
)
from forkpoint.controller.events import Output as Printed
from forkpoint.controller.results import ExecResult, Status
from forkpoint.errors import ForkpointError
from forkpoint.kernel import magics
from forkpoint.shell.messages import death_text, event_text

__all__ = ["ForkpointKernel", "notebook_text"]

HEAD_SETUP = "forkpoint.kernel.headshell"
INLINE = "module://matplotlib_inline.backend_inline"


def notebook_text(event: Event) -> str:
    """The event in a notebook's words: the terminal's, where a notebook has no Ctrl-C."""
    if isinstance(event, InterruptIgnored):
        return "the cell does not stop; interrupt the kernel again to kill its process and roll back"
    if isinstance(event, StalledInPool):
        pools = " and ".join(event.pools)
        return (
            f"this cell has used no CPU for {event.seconds:.0f} s, in a process that lost {pools}'s "
            "thread pool with the fork: it is most likely waiting there for good. Interrupting the "
            "kernel twice kills the process and rolls back."
        )
    return event_text(event)


class ForkpointKernel(Kernel):
    implementation = "forkpoint"
    implementation_version = __version__
    banner = "forkpoint: every cell is a checkpoint (%checkpoints, %rewind, %undo, %tree)"
    language_info = {
        "name": "python",
        "version": sys.version.split()[0],
        "mimetype": "text/x-python",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "pygments_lexer": "ipython3",
        "nbconvert_exporter": "python",
        "file_extension": ".py",
    }
    help_links = [{"text": "forkpoint", "url": "https://github.com/forkpoint/forkpoint"}]
    autorewind = Bool(
        False, help="start with %autorewind on (a cell run again first rewinds to where its last run began)"
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._allow_stdin = False
        self._error: dict[str, Any] | None = None  # the failing cell's structured traceback
        self._payload: list[dict[str, Any]] = []  # the running cell's reply payload (pages)
        self._last_plain = ""  # the running cell's result, for history with output
        self._running = False  # a cell runs (on the main thread)
        self.history = magics.History()
        self.cells = magics.CellRuns()
        self.cells.autorewind = bool(self.autorewind)
        self.controller = self._start()
        for kind in ("comm_open", "comm_msg", "comm_close"):  # relayed to the head's widgets
            self.shell_handlers[kind] = self._comm_in
        atexit.register(self._stop)
        signal.signal(signal.SIGTERM, self._terminated)

    def _start(self, restore: str | None = None) -> Controller:
        os.environ["FORKPOINT_HEAD_SETUP"] = HEAD_SETUP
        os.environ.setdefault("MPLBACKEND", INLINE)
        controller = Controller(
            output=Output.PIPES, on_event=self._on_event, on_input=self._on_input, restore=restore
        )
        controller.start()
        return controller

    def restore(self, name: str) -> None:
        """Replace this kernel's checkpoints with saved session ``name``: its head and tree.
        A name that is not saved changes nothing; one that fails to restore leaves a fresh
        interpreter, and says why."""
        from forkpoint.persist import store

        if not store.exists(name):
            raise ForkpointError(f'there is no saved session named "{name}" (%sessions lists them).')
        self._stop()
        self.cells = magics.CellRuns()
        try:
            self.controller = self._start(restore=name)
        except ForkpointError:
            self.controller = self._start()
            raise

    def _terminated(self, signum: int, frame: object) -> None:
        """SIGTERM (jupyter_client's, when a shutdown takes too long): end every process of
        ours and the runtime dir, then exit at once; unwinding from wherever the main thread
        was (ipykernel's own atexit, joining its threads) could leave the controller half shut."""
        self._stop()
        os._exit(0)

    def _stop(self) -> None:
        controller = getattr(self, "controller", None)
        if controller is not None:
            controller.close()

    # ----------------------------------------------------------------- what the engine says

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Printed):
            self.send_response(self.iopub_socket, "stream", {"name": event.stream.value, "text": event.text})
        elif isinstance(event, Display):
            self._on_display(event)
        elif isinstance(event, CommMessage) and self.session is not None:
            parent = self.get_parent()
            self.session.send(
                self.iopub_socket,
                event.msg_type,
                event.content,
                parent=parent,
                metadata=event.metadata,
                buffers=list(event.buffers),
                ident=f"comm-{event.content.get('comm_id', '')}".encode(),
            )
        else:
            self.say(f"forkpoint: {notebook_text(event)}\n", "stderr")

    def _on_display(self, event: Display) -> None:
        kind = event.kind
        if kind is DisplayKind.ERROR:
            self._error = dict(event.data)
            return  # sent once the cell has ended, with where it was rolled back to
        if kind is DisplayKind.PAGE:
            start = int(event.metadata.get("start") or 0)
            self._payload.append({"source": "page", "data": event.data, "start": start})
            return
        if kind is DisplayKind.CLEAR_OUTPUT:
            self.send_response(self.iopub_socket, "clear_output", {"wait": bool(event.data.get("wait"))})
            return
        content: dict[str, Any] = {"data": event.data, "metadata": event.metadata}
        if kind is DisplayKind.EXECUTE_RESULT:
            content["execution_count"] = self.execution_count
            self._last_plain = str(event.data.get("text/plain", ""))
        else:
            content["transient"] = event.transient
        self.send_response(self.iopub_socket, kind.value, content)

    def _on_input(self, prompt: str, password: bool) -> str | None:
        """The notebook's answer to the head's ``input()``. An interrupt while it waits (the
        head gets it too, and stops waiting) ends the wait here: ipykernel's own wait raises
        KeyboardInterrupt, which the controller's Ctrl-C counting would otherwise swallow."""
        if not self._allow_stdin:
            return None
        counting = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return self.getpass(prompt) if password else self.raw_input(prompt)
        except (Exception, KeyboardInterrupt):  # interrupted, or the front end took no input
            return None
        finally:
            signal.signal(signal.SIGINT, counting)

    def say(self, text: str, name: str = "stdout") -> None:
        self.send_response(self.iopub_socket, "stream", {"name": name, "text": text})

    def say_html(self, html: str, text: str) -> None:
        bundle = {"data": {"text/html": html, "text/plain": text}, "metadata": {}, "transient": {}}
        self.send_response(self.iopub_socket, "display_data", bundle)

    # ----------------------------------------------------------------- requests

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, str] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict[str, Any] | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        self._running = True
        try:
            return self._execute(code, silent, store_history, user_expressions, allow_stdin, cell_id)
        finally:
            self._running = False

    def _execute(
        self,
        code: str,
        silent: bool,
        store_history: bool,
        user_expressions: dict[str, str] | None,
        allow_stdin: bool,
        cell_id: str | None,
    ) -> dict[str, Any]:
        self._allow_stdin = allow_stdin
        self._payload, self._last_plain = [], ""
        if store_history and not silent:
            self.history.add(self.execution_count, code)
        try:
            lines = magics.parse(code)
            if lines is not None:
                for line in lines:
                    magics.run(self, line)
                return self._ok()
            if self.cells.autorewind and (before := self.cells.before(cell_id)) is not None:
                self.controller.rewind(before)
                self.say(
                    f"forkpoint: this cell ran before; rewound to [{before}], where its last run began\n",
                    "stderr",
                )
            start = self.controller.current
            # silent: a front end's own request (VS Code's variable view), no cell of the user's
            result = self.controller.execute(code, checkpoint=not silent)
        except ForkpointError as exc:
            return self._fail("ForkpointError", exc.message, [f"forkpoint: {exc.message}"])
        if result.status is Status.OK:
            if not silent:
                self.cells.ran(cell_id, start)
            self.history.result(self.execution_count, self._last_plain)
            return self._ok(user_expressions)
        return self._failed(result)

    def _ok(self, expressions: dict[str, str] | None = None) -> dict[str, Any]:
        payload, self._payload = self._payload, []
        return {
            "status": "ok",
            "execution_count": self.execution_count,
            "payload": payload,
            "user_expressions": {name: self._expression(e) for name, e in (expressions or {}).items()},
        }

    def _expression(self, expr: str) -> dict[str, Any]:
        """One of a request's user_expressions, evaluated in the head (no checkpoint)."""
        try:
            ok, text = self.controller.evaluate(expr)
        except ForkpointError as exc:
            ok, text = False, exc.message
        if ok:
            return {"status": "ok", "data": {"text/plain": text}, "metadata": {}}
        name = text.split(":", 1)[0].strip() or "Error"
        return {"status": "error", "ename": name, "evalue": text, "traceback": [text]}

    def _failed(self, result: ExecResult) -> dict[str, Any]:
        error, self._error = self._error, None
        if error is None:  # the head died, or failed outside IPython's reporting
            text = (result.traceback or "").rstrip("\n")
            if result.status is Status.DIED:
                text = f"the head {death_text(result.death)}"
            error = {"ename": result.status.value, "evalue": text, "traceback": text.splitlines()}
        rolled = result.rolled_back_to
        why = "interrupted; " if result.status is Status.INTERRUPTED else ""
        where = [] if rolled is None else [f"forkpoint: {why}rolled back to [{rolled}]"]
        return self._fail(str(error["ename"]), str(error["evalue"]), [*error["traceback"], *where])

    def _fail(self, ename: str, evalue: str, traceback: list[str]) -> dict[str, Any]:
        content = {"ename": ename, "evalue": evalue, "traceback": traceback}
        self.send_response(self.iopub_socket, "error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    def _comm_in(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        buffers = [bytes(b) for b in parent.get("buffers") or ()]
        try:
            self.controller.relay_comm(
                parent["header"]["msg_type"], parent["content"], parent.get("metadata") or {}, buffers
            )
        except ForkpointError as exc:
            self.log.warning("forkpoint: %s", exc.message)

    async def comm_info_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        """The head's comms (a reloaded notebook asks, to find its widgets again)."""
        target = str(parent["content"].get("target_name") or "")
        reply = self._ask("comm_info", target, 0, {"status": "ok", "comms": {}})
        if self.session is not None:
            self.session.send(stream, "comm_info_reply", reply, parent, ident)

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:  # type: ignore[override]
        pos = len(code) if cursor_pos is None else cursor_pos
        return self._ask(
            "complete",
            code,
            pos,
            {"matches": [], "cursor_start": pos, "cursor_end": pos, "metadata": {}, "status": "ok"},
        )

    async def do_inspect(  # type: ignore[override]
        self, code: str, cursor_pos: int, detail_level: int = 0, omit_sections: Any = ()
    ) -> dict[str, Any]:
        return self._ask(
            "inspect",
            code,
            cursor_pos,
            {"status": "ok", "data": {}, "metadata": {}, "found": False},
            detail_level,
        )

    async def do_is_complete(self, code: str) -> dict[str, Any]:  # type: ignore[override]
        if magics.parse(code) is not None:
            return {"status": "complete"}
        return self._ask("is_complete", code, len(code), {"status": "unknown"})

    def _ask(
        self, kind: str, code: str, pos: int, fallback: dict[str, Any], detail: int = 0
    ) -> dict[str, Any]:
        try:
            return self.controller.ask_shell(kind, code, pos, detail)
        except ForkpointError:
            return fallback

    async def do_history(  # type: ignore[override]
        self,
        hist_access_type: str,
        output: bool,
        raw: bool,
        session: int | None = None,
        start: int = 0,
        stop: int | None = None,
        n: int | None = None,
        pattern: str | None = None,
        unique: bool = False,
    ) -> dict[str, Any]:
        """The cells this kernel ran, rolled-back ones too: a notebook's history is what was
        run, not what the head's state keeps."""
        rows = self.history.get(hist_access_type, output, start, stop, n, pattern, unique)
        return {"status": "ok", "history": rows}

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        """Ends the engine now if no cell runs; else (the request came on the control thread
        while the main thread runs a cell) at exit, or at jupyter_client's SIGTERM: the
        controller has one owner at a time."""
        if not self._running:
            self._stop()
            self.controller = None  # type: ignore[assignment]
        return {"status": "ok", "restart": restart}
