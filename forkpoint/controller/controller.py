"""The engine's facade: ``Controller`` composes the parts and is all a front end touches.

Flow of one input: the driver sends ``exec`` to the head; the head runs it, forks a
checkpoint (announcing it with ``taken`` on its own connection, so checkpoints are numbered
in the order they were taken) and replies ``result``. The forked checkpoint connects on its
own and says ``hello``; its connection is matched to the tree node by the pid the kernel
reports for it (SO_PEERCRED). A failed input is rolled back by replacing the head with a
fork of the checkpoint before it.

The parts (docs/architecture.md draws them): the supervisor (processes), the hub (socket,
select loop), the head link, the checkpoint pool, the driver (inputs, rewinds, roll-backs),
the script verbs, the session keeper. This class holds no state of its own but options.
Errors the user can act on are ``ForkpointError``; everything else is an internal error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forkpoint import launch, leftovers, paths
from forkpoint.controller import memory
from forkpoint.controller.driver import Driver, HeadState
from forkpoint.controller.events import Event, FilesNotRewound, Outbox, RuntimeDirRefused
from forkpoint.controller.head import HeadLink
from forkpoint.controller.hub import Hub
from forkpoint.controller.notebook import AskInput, NotebookRelay
from forkpoint.controller.output import OutputPipes
from forkpoint.controller.pool import CheckpointPool
from forkpoint.controller.results import (
    Change,
    ExecResult,
    MemoryReport,
    Resumed,
    Rewound,
    Saved,
    SaveProgress,
    Status,
    changes_between,
)
from forkpoint.controller.save_policy import SaveScope, choose_saved
from forkpoint.controller.script import Script
from forkpoint.controller.scripts import ScriptVerbs
from forkpoint.controller.supervisor import Supervisor
from forkpoint.errors import ForkpointError, Reason
from forkpoint.launch import Place
from forkpoint.protocol import Message
from forkpoint.tree import Checkpoint, CheckpointView, TreeView

if TYPE_CHECKING:
    from forkpoint.controller.sessions import SessionKeeper

MAX_LABEL = 80  # characters: a label is shown in listings and hints

__all__ = ["Controller", "Output", "default_budget"]


class Output(Enum):
    """Where the head's stdout and stderr go."""

    TERMINAL = "terminal"  # the fds the controller was given (or its own): a real terminal
    PIPES = "pipes"  # pipes the engine reads, emitted as ``events.Output`` in order


def default_budget() -> int:
    """Half of the RAM: checkpoints only hold what the head changed since, so this is a lot."""
    return memory.physical_memory()[0] // 2


class Controller:
    """Runs one head and its checkpoints. Use as a context manager, or call start/close."""

    def __init__(
        self,
        *,
        python: str | None = None,
        memory_budget: int | None = None,
        max_checkpoints: int = 200,
        stdio: tuple[int, int, int] | None = None,
        on_event: Callable[[Event], None] | None = None,
        reap_everything: bool = False,
        restore: str | None = None,
        lazy: bool = False,
        output: Output = Output.TERMINAL,
        launched: Place | None = None,
        on_input: AskInput | None = None,
    ) -> None:
        self.python = python or sys.executable
        self._launched = launched  # the place (and first head) the CLI made before importing us
        self.events: list[Event] = []
        self._restore = restore  # start from this saved session instead of a fresh interpreter
        self._place: Place | None = None  # the runtime dir, its lock and socket, once started
        deliver = on_event or self.events.append
        self._pipes = OutputPipes(deliver) if output is Output.PIPES else None
        self._stdio = self._pipes.stdio if self._pipes is not None else stdio
        self._supervisor = Supervisor(reap_everything)
        self._outbox = Outbox(deliver, lambda: self._driver.position.state is not HeadState.IDLE)
        self._hub = Hub(self._supervisor, self._outbox.emit)
        budget = memory_budget if memory_budget is not None else default_budget()
        self._pool = CheckpointPool(
            self._hub, self._supervisor, self._outbox.emit, budget, max(2, max_checkpoints)
        )
        handlers: dict[str, Callable[[Message], None]] = {"taken": self._on_taken, "module": self._on_module}
        self._head = HeadLink(
            self._hub, self._supervisor, self._pool, handlers, self._outbox.emit, self._outbox.release
        )
        if self._pipes is not None:
            # After the head's channel: what the head printed before a message it has waited
            # to see read (agent/process_state.settle), so pipe data still there when the
            # message is read came after it.
            for reader in self._pipes.readers:
                self._hub.add_source(reader)
        self._driver = Driver(
            self._head, self._pool, self._supervisor, self._outbox, lambda: self.script is not None
        )
        self._notebook = NotebookRelay(self._driver, self._outbox.emit, on_input)
        handlers.update(self._notebook.handlers())
        self._scripts = ScriptVerbs(self._driver, self._outbox)
        self._lazy = lazy
        self._keeper: SessionKeeper | None = None  # made when a session is first saved or restored

    @property
    def _sessions(self) -> SessionKeeper:
        """The session keeper, imported and made on first use: CRIU, the store and their
        imports are no part of a start-up that saves nothing."""
        if self._keeper is None:
            from forkpoint.controller.sessions import SessionKeeper

            stdio = lambda: self._stdio or (0, 1, 2)  # noqa: E731
            self._keeper = SessionKeeper(self._pool, self._hub, self._supervisor, stdio, self._lazy)
            self._keeper.rundir = self._place.rundir if self._place is not None else ""
        return self._keeper

    def _verified(self) -> None:
        if self._keeper is not None:  # only a restored session has pages to check
            self._keeper.verified()

    def _on_taken(self, msg: Message) -> None:
        position = self._driver.position
        node = self._pool.taken(position.checkpoint, position.source, msg, self.script)
        position.passed(node.id)
        self._pool.enforce_budget(position.current, between_inputs=False)

    def _on_module(self, msg: Message) -> None:
        self._scripts.on_module(msg)

    # ----------------------------------------------------------------- life cycle

    def __enter__(self) -> Controller:
        try:
            self.start()
        except BaseException:
            self.close()  # a failed start leaves no socket, dir or process behind
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the first head and take checkpoint 0, the fresh interpreter (or open the
        saved session given to the constructor)."""
        self._supervisor.become_subreaper()
        place, self._launched = self._launched or launch.prepare(), None
        self._place = place
        if place.own_root is not None:
            self._outbox.emit(RuntimeDirRefused(place.refused, place.own_root))
        if place.head is not None:
            self._supervisor.watch(place.head)
        leftovers.sweep(os.path.dirname(place.rundir), Path(paths.data_dir(), "sessions"))  # of killed ones
        self._hub.adopt(place.listener, place.socket_path)
        if self._restore is not None:
            session = self._sessions.open(self._restore)
            self._driver.before_use = self._sessions.verified
            self._driver.position.settle(HeadState.IDLE, session.checkpoint)
            if session.script is None:
                self._driver.replace_head(self._pool.tree[session.checkpoint])
            else:
                self._scripts.script = Script.from_meta(session.script)
            return
        try:
            pipes = self._pipes is not None
            pid = place.head or self._supervisor.spawn_agent(self.python, place, self._stdio, pipes)
            self._head.start(pid)
        except ForkpointError:
            raise ForkpointError(self._supervisor.why_no_agent(self.python, place.rundir)) from None
        result = self.execute("")
        if result.status is not Status.OK:
            raise ForkpointError("the Python process did not start.", result.traceback)

    def close(self) -> None:
        """Stop every agent and remove the runtime dir; leaves no process behind."""
        self._hub.close()
        agents = self._pool.close()  # EOF: a parked checkpoint exits at once
        if self._head.pid is not None:  # what the user's code started first, while it is the head's
            self._supervisor.kill_descendants(self._head.pid)
        self._head.kill(wait=True)
        self._supervisor.teardown(agents)
        if self._pipes is not None:
            self._pipes.close()
            self._pipes = None
        if self._place is not None:  # its listener went with the hub
            self._place.remove()
            self._place = None
        if self._keeper is not None:
            self._keeper.close()

    # ----------------------------------------------------------------- queries

    @property
    def current(self) -> int:
        """The checkpoint whose state the head holds (or last passed, while it runs)."""
        return self._driver.position.current

    @property
    def head_pid(self) -> int | None:
        return self._head.pid

    @property
    def socket_path(self) -> str:
        return self._hub.socket_path

    @property
    def script(self) -> Script | None:
        """The script of ``run_script`` or of a restored script session, until it ended."""
        return self._scripts.script

    def view(self) -> TreeView:
        """The whole tree, evicted checkpoints included, as frozen views."""
        return self._pool.tree.view(self.current)

    def find(self, ref: str | int) -> CheckpointView:
        """Checkpoint ``ref`` (id, -N or label) that can be rewound to, or a clear error."""
        return self._pool.tree.resolve(str(ref), self.current).view()

    def checkpoints(self) -> list[CheckpointView]:
        """Checkpoints that can be rewound to, oldest first: live ones with freshly measured
        memory, and a restored session's still on disk."""
        self._pool.measure_all()
        return [n.view() for n in self._pool.tree.usable()]

    def memory(self) -> MemoryReport:
        total, available = memory.physical_memory()
        per = self._pool.measure_all()
        head = memory.measure(self._head.pid) if self._head.pid is not None else None
        return MemoryReport(head, per, self._pool.budget, self._pool.max_checkpoints, total, available)

    # ----------------------------------------------------------------- inputs

    def execute(self, code: str, checkpoint: bool = True) -> ExecResult:
        """Run one input in the head; on success it becomes a new checkpoint (unless not
        ``checkpoint``: a notebook's silent request), else rolled back."""
        return self._driver.execute(code, checkpoint)

    def complete(self, text: str) -> list[str]:
        """Completions computed in the head from its live namespace."""
        reply = self._driver.request({"op": "complete", "text": text}, "completions", timeout=5.0)
        return [str(item) for item in reply["items"]] if reply else []

    def evaluate(self, expr: str) -> tuple[bool, str]:
        """repr() of an expression in the head, without echo or checkpoint."""
        reply = self._driver.request({"op": "eval", "expr": expr}, "value")
        if reply is None:
            raise ForkpointError("the head did not answer.")
        return bool(reply["ok"]), str(reply["text"])

    def ask_shell(self, kind: str, code: str, cursor_pos: int, detail_level: int = 0) -> dict[str, Any]:
        """A notebook head's answer to ``kind`` (complete, inspect, is_complete) about ``code``."""
        return self._notebook.ask(kind, code, cursor_pos, detail_level)

    def relay_comm(
        self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any], buffers: list[bytes]
    ) -> None:
        """A front end's comm message (comm_open, comm_msg, comm_close) for the notebook head."""
        self._notebook.relay_comm(msg_type, content, metadata, buffers)

    # ----------------------------------------------------------------- moving around

    def rewind(self, ref: str | int) -> Rewound:
        """Replace the head with a fork of checkpoint ``ref`` (id, -N or label)."""
        self._verified()
        position = self._driver.position
        node = self._pool.tree.resolve(str(ref), position.current)
        before = position.checkpoint if position.state is HeadState.IDLE else None
        # A script's head stays at the checkpoint (status paused) until resume.
        pause = {"pause": True} if self.script is not None and node.site is not None else None
        written: list[str] = []
        ask = (lambda: written.extend(self._written_since(node))) if before is not None else None
        continued = self._driver.replace_head(node, resume=pause, meanwhile=ask)
        if written:
            self._outbox.emit(FilesNotRewound(node.id, tuple(written)))
        position.remember(before)
        return Rewound(node.id, continued)

    def _written_since(self, node: Checkpoint) -> list[str]:
        """Files the head opened for writing since the branch it is on parted from ``node``'s:
        a rewind does not undo them. Asked of the idle head while ``node`` forks its
        replacement; a head that does not answer has named nothing."""
        tree = self._pool.tree
        mine = set(tree.ancestors(self.current))
        parted = next((n for n in tree.chain(node.id) if n.id in mine), node)
        head = self._driver.head
        if not head.send({"op": "files_written", "since": parted.created}):
            return []
        reply = self._driver.await_reply("written", timeout=5)
        return [str(p) for p in reply["paths"]] if reply is not None else []

    def undo(self) -> Rewound:
        """Go back to where the head was before the last input or rewind."""
        self._verified()
        history = self._driver.position.history
        while history:
            node = self._pool.tree[history.pop()]
            if node.alive:
                return Rewound(node.id, self._driver.replace_head(node))
        raise ForkpointError("there is nothing to undo.")

    def label(self, name: str, ref: str | None = None) -> CheckpointView:
        name = name.strip()
        if not name or name.isdigit() or (name.startswith("-") and name[1:].isdigit()):
            raise ForkpointError(f"{name!r} cannot be a label.", "use a name that is not a number")
        if len(name) > MAX_LABEL:
            raise ForkpointError(f"a label is at most {MAX_LABEL} characters; this one has {len(name)}.")
        tree = self._pool.tree
        node = tree.resolve(ref, self.current) if ref else tree[self.current]
        node.label = name
        return node.view()

    def diff(self, a: str | int, b: str | int) -> list[Change]:
        """Names whose values differ between two checkpoints."""
        return changes_between(self._summary(a), self._summary(b))

    def _summary(self, ref: str | int) -> dict[str, dict[str, str]]:
        self._verified()
        node = self._pool.tree.resolve(str(ref), self.current)
        reply = self._pool.ask(node, {"op": "probe"}, "summary")
        return {str(k): v for k, v in reply["names"].items() if isinstance(v, dict)}

    # ----------------------------------------------------------------- scripts

    def run_script(
        self,
        path: str,
        argv: list[str],
        entries: tuple[str, ...] = (),
        lines: Mapping[str, Sequence[int]] | Sequence[int] = (),
        watch: Sequence[str] = (),
        module: str | None = None,
        code: str | None = None,
        stop_in_tests: bool = False,
        every_hit: bool = False,
    ) -> ExecResult:
        """Run a script with a checkpoint after each top-level statement, at the entry of the
        ``entries`` functions (keys: ``module:func`` outside the script) and before ``lines``
        inside functions (path -> lines; plain lines are the script's); the user's modules under
        the script's folder and ``watch`` are instrumented too. With ``module`` the file at
        ``path`` runs as ``python -m module`` runs it (the current folder's modules are the
        user's); with ``code``, that string runs as ``python -c`` runs it. On an error the head
        stays in post-mortem (``pm_exec``, ``frame``) until ``resume``. With ``stop_in_tests``
        a pytest run stops at its first failing test as at an uncaught error, with a checkpoint
        before each test to resume from. A site inside a function checkpoints its first hit,
        then a hit only once enough work has run since the last checkpoint (``agent/pacing``:
        about 40 times its pause), unless ``every_hit``."""
        return self._scripts.run(path, argv, entries, lines, watch, module, code, stop_in_tests, every_hit)

    def script_ended(self) -> int:
        return self._scripts.ended()

    def resume(self, ref: str | None = None) -> Resumed:
        self._verified()
        return self._scripts.resume(ref)

    def pm_exec(self, code: str, frame: int) -> tuple[bool, str]:
        return self._scripts.pm_exec(code, frame)

    def frame(self, index: int) -> tuple[bool, str]:
        return self._scripts.frame(index)

    # ----------------------------------------------------------------- sessions

    def save(
        self,
        name: str,
        ref: str | None = None,
        progress: Callable[[SaveProgress], None] | None = None,
        progress_every: float | None = None,
        replace: bool = False,
        scope: SaveScope = SaveScope.BRANCH,
        disk_budget: int | None = None,
    ) -> Saved:
        """Save checkpoint ``ref`` (default: the current one) and, by ``scope``, its branch as
        session ``name`` with CRIU (``save_policy``); the checkpoints stay as they are.
        ``progress`` is told every ``progress_every`` seconds while CRIU writes. A session of
        that name is replaced only if ``replace``, and then what its last save wrote of these
        checkpoints is kept, not written again."""
        from forkpoint.persist import store

        if not replace and store.exists(name):
            raise ForkpointError(
                f'there is a saved session named "{name}" already.', reason=Reason.SESSION_EXISTS
            )
        tree = self._pool.tree
        node = tree.resolve(ref, self.current) if ref else tree[tree.at_rest_base(self.current)]
        if not node.at_rest:
            raise ForkpointError(
                f"[{node.id}] was taken in the middle of an input; save one taken between inputs."
            )
        # One source of images to carry (their secret, and the dumps their links read, are one
        # session's): the session this forkpoint restored, whose checkpoints on disk are part
        # of its tree, else the last save of this name.
        before = self._sessions.restored_from() or (self._sessions.previous(name) if replace else None)
        ids = choose_saved(tree, node.id, scope, before.same if before is not None else ())
        nodes = [tree[cid] for cid in ids]
        return self._sessions.save(
            name, nodes, "shell", None, progress, progress_every, disk_budget, before, replace
        )

    def save_script(
        self,
        name: str,
        progress: Callable[[SaveProgress], None] | None = None,
        progress_every: float | None = None,
    ) -> Saved:
        """Save a failed script as session ``name``: the checkpoints resume can go on from
        (each top-level one on this branch and the latest one), its sources and versions."""
        script = self.script
        if script is None:
            raise ForkpointError("there is no script to save.")
        usable = [n for n in self._pool.tree.chain(self.current) if n.usable and n.site is not None]
        from forkpoint.controller.sessions import MAX_SAVED

        chosen = [n for n in usable if n.entry is None or n is usable[0]][:MAX_SAVED]
        if not chosen:
            raise ForkpointError("the script took no checkpoint to save.")
        source = f"run {os.path.basename(script.path)}"
        restored = self._sessions.restored_from()
        return self._sessions.save(
            name, chosen, source, script.to_meta(), progress, progress_every, before=restored
        )
