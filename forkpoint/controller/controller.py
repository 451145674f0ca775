"""The controller engine: one head, a tree of parked checkpoints, and the socket they share.

Flow of one input: ``execute`` sends ``exec`` to the head; the head runs it, forks a
checkpoint (announcing it with ``taken`` on its own connection, so checkpoints are numbered
in the order they were taken) and replies ``result``. The forked checkpoint connects on its
own and says ``hello``; its connection is matched to the tree node by the pid the kernel
reports for it (SO_PEERCRED). A failed input is rolled back by replacing the head with a
fork of the checkpoint before it.

Errors the user can act on are ``ForkpointError``; everything else is an internal error.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from forkpoint import paths
from forkpoint.channel import Channel, listen, peer_credentials, private_dir
from forkpoint.controller import memory
from forkpoint.controller.memory import ProcessMemory
from forkpoint.controller.processes import Reaper, describe_status, is_alive, kill, make_subreaper, spawn
from forkpoint.controller.resume_point import ResumeCheck
from forkpoint.controller.script import Script, read_script
from forkpoint.errors import ForkpointError, ProtocolError
from forkpoint.persist import pages, store
from forkpoint.persist.criu import TICK, Criu, dump, find_criu, require_privileges, restore, written
from forkpoint.protocol import PROTOCOL_VERSION, Message
from forkpoint.tree import Checkpoint, CheckpointTree, choose_evictions

__all__ = [
    "Change",
    "Controller",
    "Event",
    "ExecResult",
    "MemoryReport",
    "Resumed",
    "Rewound",
    "Saved",
    "Script",
    "read_script",
]

HELLO_TIMEOUT = 30.0
MEASURE_EVERY = 1.0  # seconds between memory measurements of all checkpoints
MAX_SAVED = 32  # checkpoints a script session keeps at most


@dataclass(frozen=True)
class Event:
    """Something the front end should tell the user: kind is notice, died, evicted or interrupt."""

    kind: str
    text: str


@dataclass(frozen=True)
class ExecResult:
    """How an input ended. status: ok, error, interrupted, died, exit, or paused (a script's
    head rewound to a checkpoint, waiting there)."""

    status: str
    checkpoint: int | None = None
    traceback: str | None = None
    exit_code: int | None = None
    rolled_back_to: int | None = None
    death: str | None = None


@dataclass(frozen=True)
class Saved:
    name: str
    checkpoint: int
    size: int  # bytes on disk
    seconds: float


@dataclass(frozen=True)
class SaveProgress:
    """Where a save is, for a progress line: checkpoint ``index`` of ``count`` is being
    written by CRIU, ``written`` bytes of about ``expected`` (its resident memory)."""

    checkpoint: int
    index: int
    count: int
    written: int
    expected: int


@dataclass(frozen=True)
class Rewound:
    checkpoint: int
    continued: ExecResult | None  # set when the checkpoint was mid-input: the rest ran


@dataclass(frozen=True)
class Change:
    name: str
    kind: str  # added, removed, changed
    before: str | None
    after: str | None


@dataclass(frozen=True)
class MemoryReport:
    head: ProcessMemory | None
    checkpoints: dict[int, ProcessMemory]
    budget: int
    max_checkpoints: int
    total_ram: int
    available_ram: int

    @property
    def held(self) -> int:
        return sum(m.uss + m.page_tables for m in self.checkpoints.values())


@dataclass(frozen=True)
class Resumed:
    checkpoint: int
    where: str  # what the checkpoint follows, e.g. "line 12: boxes = detect(frames)"
    skipped: float  # seconds of the first run that the resume did not redo
    result: ExecResult


@dataclass
class _Head:
    pid: int
    channel: Channel
    gone: bool = False


@dataclass
class _Arrival:
    hello: Message
    channel: Channel


@dataclass
class _Options:
    python: str
    memory_budget: int
    max_checkpoints: int
    stdio: tuple[int, int, int] | None
    reap_everything: bool


@dataclass
class _State:
    base: int | None = None  # the checkpoint whose state the head holds, None while running
    tip: int | None = None  # the latest checkpoint on the running head's line
    source: str = ""
    inputs: int = 0
    history: list[int] = field(default_factory=list)
    interrupts: int = 0  # SIGINTs seen while an input runs
    handled: int = 0  # of which acted on
    interrupted_at: float = 0.0
    evicted: bool = False  # whether the user was told that checkpoints are being evicted
    reply: Message | None = None
    measured: float = 0.0
    held: list[Event] = field(default_factory=list)  # told when the head next waits


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
    ) -> None:
        self.options = _Options(
            python or sys.executable,
            memory_budget if memory_budget is not None else default_budget(),
            max(2, max_checkpoints),
            stdio,
            reap_everything,
        )
        self.tree = CheckpointTree()
        self.events: list[Event] = []
        self._on_event = on_event or self.events.append
        self._state = _State()
        self._reaper = Reaper(reap_everything)
        self._head: _Head | None = None
        self._channels: dict[int, Channel] = {}
        self._arrivals: dict[int, _Arrival] = {}
        self._listener: socket.socket | None = None
        self.script: Script | None = None
        self._rundir: str | None = None
        self.socket_path = ""
        self._restore = restore  # start from this saved session instead of a fresh interpreter
        self._lazy = lazy  # restore it with lazy pages (userfaultfd): ready at once, memory follows
        self._daemons: list[subprocess.Popen[bytes]] = []  # CRIU lazy-pages daemons
        self._stored: tuple[Path, str] | None = None  # the restored session's dir and secret

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
        """Start the first head and take checkpoint 0, the fresh interpreter (or restore the
        saved session given to the constructor)."""
        make_subreaper()
        self._rundir = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=private_dir(paths.runtime_root()))
        self.socket_path = os.path.join(self._rundir, "control.sock")
        self._listener = listen(self.socket_path)
        if self._restore is not None:
            self._start_restored(self._restore)
            return
        env = dict(os.environ, FORKPOINT_SOCKET=self.socket_path, FORKPOINT_CONTROLLER=str(os.getpid()))
        if os.path.realpath(self.options.python) != os.path.realpath(sys.executable):
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(here), env.get("PYTHONPATH")]))
        argv = [self.options.python, "-m", "forkpoint.agent"]
        try:
            pid = spawn(argv, env, self.options.stdio)
        except OSError as exc:
            raise ForkpointError(f"cannot start {self.options.python}: {exc.strerror}.") from None
        self._reaper.watch(pid)
        arrival = self._await_arrival(lambda h: h["role"] == "head" and h["pid"] == pid, HELLO_TIMEOUT, pid)
        self._head = _Head(pid, arrival.channel)
        result = self.execute("")
        if result.status != "ok":
            raise ForkpointError("the Python process did not start.", result.traceback or result.death)

    def close(self) -> None:
        """Stop every agent and remove the runtime dir; leaves no process behind."""
        agents = [n.pid for n in self.tree.alive()]
        for ch in list(self._channels.values()) + [a.channel for a in self._arrivals.values()]:
            ch.close()  # EOF: a parked checkpoint exits at once
        self._channels.clear()
        self._arrivals.clear()
        if self._head is not None:
            self._kill_descendants(self._head.pid)
        self._kill_head()
        for node in self.tree.alive():
            node.alive = False
        deadline = time.monotonic() + 2.0
        while any(is_alive(pid) for pid in agents) and time.monotonic() < deadline:
            self._reaper.reap()
            time.sleep(0.005)
        for pid in agents:
            if is_alive(pid):
                kill(pid)
        for daemon in self._daemons:  # done once the memory is in place; not if we stop first
            if daemon.poll() is None:
                daemon.kill()
            daemon.wait()
        if self.options.reap_everything:
            self._kill_descendants(os.getpid())
        self._reaper.reap()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._rundir is not None:
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._rundir = None

    def _kill_descendants(self, pid: int) -> None:
        """Processes the user's code started must not outlive the tool either."""
        import psutil

        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        deadline = time.monotonic() + 2.0
        while any(is_alive(c.pid) for c in children) and time.monotonic() < deadline:
            self._reaper.reap()
            time.sleep(0.005)

    # ----------------------------------------------------------------- queries

    @property
    def current(self) -> int:
        """The checkpoint whose state the head holds (or last passed, while it runs)."""
        state = self._state
        value = state.base if state.base is not None else state.tip
        return value if value is not None else 0

    @property
    def head_pid(self) -> int | None:
        return self._head.pid if self._head else None

    # ----------------------------------------------------------------- sessions

    def save(
        self,
        name: str,
        ref: str | None = None,
        progress: Callable[[SaveProgress], None] | None = None,
        progress_every: float = TICK,
    ) -> Saved:
        """Save checkpoint ``ref`` (default: the current one) as session ``name`` with CRIU;
        the checkpoint itself stays as it is. ``progress`` is told every ``progress_every``
        seconds while CRIU writes."""
        node = (
            self.tree.resolve(ref, self.current) if ref else self.tree[self.tree.at_rest_base(self.current)]
        )
        if not node.at_rest:
            raise ForkpointError(
                f"[{node.id}] was taken in the middle of an input; save one taken between inputs."
            )
        return self._save(name, [node], "shell", None, progress, progress_every)

    def save_script(
        self,
        name: str,
        progress: Callable[[SaveProgress], None] | None = None,
        progress_every: float = TICK,
    ) -> Saved:
        """Save a failed script as session ``name``: the checkpoints resume can go on from
        (each top-level one on this branch and the latest one), its sources and versions."""
        script = self.script
        if script is None:
            raise ForkpointError("there is no script to save.")
        chain = [self.tree[cid] for cid in self.tree.ancestors(self.current)]
        usable = [n for n in chain if (n.alive or n.stored) and n.site is not None]
        chosen = [n for n in usable if n.entry is None or n is usable[0]][:MAX_SAVED]
        if not chosen:
            raise ForkpointError("the script took no checkpoint to save.")
        source = f"run {os.path.basename(script.path)}"
        return self._save(name, chosen, source, script.to_meta(), progress, progress_every)

    def _save(
        self,
        name: str,
        nodes: list[Checkpoint],
        source: str,
        script: dict[str, object] | None = None,
        progress: Callable[[SaveProgress], None] | None = None,
        progress_every: float = TICK,
    ) -> Saved:
        criu = find_criu()
        require_privileges("saving a session")
        started = time.monotonic()
        secret = secrets.token_hex(16)
        latest = max(n.id for n in nodes)
        session = store.Session(
            name, time.time(), source, latest, len(nodes), tree=self._tree_meta(latest), secret=secret
        )
        session.kept, session.script = [n.id for n in nodes], script
        attach = str(store.sessions_dir() / store.check_name(name) / "attach.json")
        with store.build(name) as folder:
            previous: tuple[Path, dict[str, pages.Index]] | None = None
            for index, node in enumerate(sorted(nodes, key=lambda n: n.id), 1):
                images = folder / "images" / str(node.id)
                images.mkdir(mode=0o700, parents=True)
                candidate = self._candidate(node, attach, f"{secret}-{node.id}")
                tick = None
                if progress is not None:
                    resident = memory.measure(node.pid)  # what the candidate, its fork, holds
                    expected = resident.rss if resident else 0
                    tick = functools.partial(
                        _tell_progress,
                        progress,
                        SaveProgress(node.id, index, len(nodes), 0, expected),
                        images,
                    )
                try:
                    dump(criu, candidate, str(images), self._rundir or str(folder), tick, progress_every)
                finally:
                    kill(candidate)
                pages.mark_lazy(images)
                previous = (images, pages.share_or_index(images, previous))
            session.images = store.manifest(folder / "images")
            store.write_meta(folder, session)
        size = store.size_of(store.sessions_dir() / name)
        return Saved(name, latest, size, time.monotonic() - started)

    def _candidate(self, node: Checkpoint, attach: str, secret: str) -> int:
        ch = self._checkpoint_channel(node)
        if not ch.send({"op": "save", "attach": attach, "secret": secret}):
            self._lost_checkpoint(node)
        reply = ch.recv(timeout=HELLO_TIMEOUT)
        if reply is None:
            self._lost_checkpoint(node)
        if reply["op"] != "candidate" or reply["pid"] <= 0:
            raise ForkpointError("the checkpoint could not fork a process to save (PID namespaces refused?).")
        self._reaper.watch(int(reply["pid"]))
        return int(reply["pid"])

    def _tree_meta(self, upto: int) -> list[dict[str, object]]:
        return [n.to_meta() for n in sorted(self.tree.nodes.values(), key=lambda n: n.id) if n.id <= upto]

    def _start_restored(self, name: str) -> None:
        """Restore a saved session: CRIU brings a saved checkpoint back, it finds this
        controller through the session's attach file and takes the terminal's fds. A shell
        session gets a head forked from its checkpoint. A script's checkpoints stay on disk
        until resume (or a rewind, or a save) needs one: each restored process holds all of
        its memory, as restored processes share no pages, so bringing back ten checkpoints
        of a 1 GB script at once would take 10 GB."""
        session, folder = store.load(name)
        store.check_images(name, folder / "images", session.images)
        find_criu()
        require_privileges("restoring a session")
        for entry in session.tree:
            self.tree.restore_node(entry)
        for cid in session.kept:
            self.tree[cid].stored = True
        self._stored = (folder, session.secret)
        self._state.base = self._state.tip = session.checkpoint
        if session.script is None:
            self._spawn_head_from(self.tree[session.checkpoint])
        else:
            self.script = Script.from_meta(session.script)

    def _bring_back(self, node: Checkpoint) -> None:
        """Restore a checkpoint of the session this controller started from."""
        assert self._stored is not None
        folder, secret = self._stored
        attach = folder / "attach.json"
        store.write_private(attach, {"socket": self.socket_path, "controller": os.getpid()})
        try:
            self._restore_checkpoint(
                find_criu(), folder / "images" / str(node.id), f"{secret}-{node.id}", node.id
            )
        finally:
            attach.unlink(missing_ok=True)

    def _restore_checkpoint(self, criu: Criu, images: Path, secret: str, cid: int) -> None:
        work = self._rundir or str(images)
        if self._lazy:
            work = tempfile.mkdtemp(prefix=f"lazy-{cid}-", dir=work)  # each daemon listens in its own
        init, daemon = restore(criu, str(images), work, self._lazy)
        self._daemons = [d for d in self._daemons if d.poll() is None]
        if daemon is not None:
            self._daemons.append(daemon)
        self._reaper.watch(init)  # the init of its PID namespace; the checkpoint is its child
        arrival = self._await_arrival(
            lambda h: h["role"] == "restored" and h.get("secret") == secret, HELLO_TIMEOUT, init
        )
        socket.send_fds(arrival.channel.sock, [b"F"], list(self.options.stdio or (0, 1, 2)))
        node = self.tree[cid]
        node.pid, node.alive = int(arrival.hello["pid"]), True
        self._channels[cid] = arrival.channel

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints that can be rewound to, oldest first: live ones with freshly measured
        memory, and a restored session's still on disk."""
        self._measure(force=True)
        usable = [n for n in self.tree.nodes.values() if n.alive or n.stored]
        return sorted(usable, key=lambda n: n.id)

    def memory(self) -> MemoryReport:
        total, available = memory.physical_memory()
        per = self._measure_all()
        head = memory.measure(self._head.pid) if self._head else None
        return MemoryReport(
            head, per, self.options.memory_budget, self.options.max_checkpoints, total, available
        )

    # ----------------------------------------------------------------- inputs

    def execute(self, code: str) -> ExecResult:
        """Run one input in the head; on success it becomes a new checkpoint, else rolled back."""
        head = self._require_head()
        state = self._state
        previous = state.base
        state.inputs += 1
        state.source = code
        state.tip = previous
        state.base = None
        filename = f"<input-{state.inputs}>"
        if not head.channel.send({"op": "exec", "code": code, "filename": filename}):
            head.gone = True
        result = self._finish_input()
        if result.status == "ok" and previous is not None:
            state.history.append(previous)
        return result

    def _finish_input(self) -> ExecResult:
        state = self._state
        state.interrupts = state.handled = 0
        state.interrupted_at = 0.0
        with _counting_sigint(state):
            reply = self._await_reply("result")
        if reply is None:
            death = self._bury_head()
            if self.script is not None:  # post-mortem of a script: resume picks where to go on
                return ExecResult("died", death=death)
            target = self._restore_head(self.tree.at_rest_base(self.current))
            if state.interrupts >= 2:
                return ExecResult(
                    "interrupted", death="was killed after a second Ctrl-C", rolled_back_to=target
                )
            return ExecResult("died", death=death, rolled_back_to=target)
        status = reply["status"]
        if status == "ok":
            state.base = state.tip
            self._enforce_budget(measure_all=True)
            return ExecResult("ok", checkpoint=state.base)
        if status == "exit":
            state.base = state.tip
            return ExecResult("exit", exit_code=reply["exit_code"])
        if self.script is not None:
            return ExecResult(status, traceback=reply["traceback"])  # the head stays, in post-mortem
        target = self._restore_head(self.tree.at_rest_base(self.current))
        return ExecResult(status, traceback=reply["traceback"], rolled_back_to=target)

    def complete(self, text: str) -> list[str]:
        """Completions computed in the head from its live namespace."""
        reply = self._request({"op": "complete", "text": text}, "completions", timeout=5.0)
        return [str(item) for item in reply["items"]] if reply else []

    def evaluate(self, expr: str) -> tuple[bool, str]:
        """repr() of an expression in the head, without echo or checkpoint."""
        reply = self._request({"op": "eval", "expr": expr}, "value")
        if reply is None:
            raise ForkpointError("the head did not answer.")
        return bool(reply["ok"]), str(reply["text"])

    def _request(self, msg: Message, op: str, timeout: float | None = None) -> Message | None:
        """Ask the idle head something; if it turns out dead, replace it and ask once more."""
        for _ in range(2):
            head = self._require_head()
            if head.channel.send(msg):
                reply = self._await_reply(op, timeout)
                if reply is not None or not head.gone:
                    return reply
            head.gone = True
        return None

    # ----------------------------------------------------------------- scripts

    def run_script(
        self,
        path: str,
        argv: list[str],
        entries: tuple[str, ...] = (),
        lines: Mapping[str, Sequence[int]] | Sequence[int] = (),
        watch: Sequence[str] = (),
    ) -> ExecResult:
        """Run a script with a checkpoint after each top-level statement, at the entry of the
        ``entries`` functions (keys: ``module:func`` outside the script) and before ``lines``
        inside functions (path -> lines; plain lines are the script's); the user's modules under
        the script's folder and ``watch`` are instrumented too. On an error the head stays in
        post-mortem (``pm_exec``, ``frame``) until ``resume``."""
        path = os.path.abspath(path)
        source = read_script(path)
        if not isinstance(lines, Mapping):
            lines = {path: list(lines)} if lines else {}
        by_path = {os.path.abspath(p): list(ns) for p, ns in lines.items()}
        watched = [os.path.abspath(w) for w in watch]
        self.script = Script(path, list(argv), [source], time.time(), list(entries), by_path, watched)
        return self._start_script()

    def _start_script(self) -> ExecResult:
        assert self.script is not None
        head = self._require_head()
        state = self._state
        state.source, state.tip, state.base = "", state.base, None
        msg = {
            "op": "run",
            "path": self.script.path,
            "source": self.script.versions[-1],
            "argv": self.script.argv,
            "entries": self.script.entries,
            "lines": self.script.lines,
            "watch": self.script.watch,
        }
        if not head.channel.send(msg):
            head.gone = True
        return self._finish_input()

    def script_ended(self) -> int:
        """After the script ran to its end: inputs from now on are a shell's, in the script's
        namespace, starting from a checkpoint of the finished script (``python -i``)."""
        self.script = None
        result = self.execute("")
        if result.status != "ok" or result.checkpoint is None:
            raise ForkpointError("the script's process did not take inputs after it ended.")
        return result.checkpoint

    def resume(self, ref: str | None = None) -> Resumed:
        """Continue the failed script with the files' new code from the latest checkpoint that
        the new code can continue (or ``ref``)."""
        script = self.script
        if script is None:
            raise ForkpointError("there is no script to resume.", "resume follows forkpoint run")
        new = read_script(script.path)
        modules = script.edited_modules()
        if ref:
            node = self.tree.resolve(ref, self.current)
        else:
            node, why = self._resume_point(new, modules)
            if why:
                self._emit("notice", why)
        if node.id != 0 and node.site is None:
            raise ForkpointError(f"[{node.id}] is not a checkpoint of the script.", ":checkpoints lists them")
        skipped = max(0.0, node.created - script.started) if node.id else 0.0
        for text in script.follow_lines(new, modules):
            self._emit("notice", text)
        script.new_version(new, {**script.module_versions[-1], **modules})
        if node.id == 0:  # nothing can be kept: run the new script from the start
            self._kill_head(wait=False)
            self._restore_head(0)
            script.started = time.time()
            self._emit(
                "resume", "no checkpoint can continue the new code; running the script again from the start"
            )
            return Resumed(0, "the start", 0.0, self._start_script())
        directive = {
            "path": script.path,
            "source": new,
            "start": int(node.site or 0) + 1,
            "lines": script.lines,
            "modules": modules,
        }
        self._emit("resume", f"resuming from [{node.id}] {node.title}: skips {skipped:.1f} s of work")
        if node.entry:
            self._say_old_calls(node)
        result = self._replace_head(node, resume=directive)
        assert result is not None
        return Resumed(node.id, node.source, skipped, result)

    def _resume_point(self, new: str, modules: dict[str, str]) -> tuple[Checkpoint, str | None]:
        """The latest checkpoint on this branch that the new code can continue, and why later
        ones cannot (None when the latest one can)."""
        script = self.script
        assert script is not None
        chain = [self.tree[cid] for cid in self.tree.ancestors(self.current)]
        ran_by: list[set[str]] = []  # ran_by[i]: functions first called at or before chain[i]
        ran: set[str] = set()
        for node in reversed(chain):
            ran = ran | set(node.called)
            ran_by.append(ran)
        ran_by.reverse()
        check = ResumeCheck(script, new, modules)
        first_why = None
        for i, node in enumerate(chain):
            if not (node.alive or node.stored) or node.site is None or node.version is None:
                continue
            why = check.why_not(node, ran_by[i])
            if why is None:
                if first_why is None:
                    return node, None
                return node, f"[{first_why[0]}] cannot go on with the new code: {first_why[1]}"
            first_why = first_why or (node.id, why)
        return self.tree[0], None

    def _say_old_calls(self, node: Checkpoint) -> None:
        """Earlier calls of the function resumed into ran its old code: say so, and how to redo."""
        chain = [self.tree[cid] for cid in self.tree.ancestors(node.id)][1:]
        site = node.site
        earlier = [
            n.call
            for n in chain
            if n.entry == node.entry and n.site == site and n.call and n.call < (node.call or 0)
        ]
        if not earlier or site is None or node.call is None:
            return
        before = next((n for n in chain if n.entry is None and n.site is not None and n.site < site), None)
        redo = f"resume --from {before.id} redoes them" if before else "run the script again to redo them"
        calls = f"calls 1-{node.call - min(earlier)} of {node.entry}()"
        self._emit("notice", f"{calls} in this statement ran the old code; {redo}")

    def pm_exec(self, code: str, frame: int) -> tuple[bool, str]:
        """Run an input in frame ``frame`` of the failure (0: where it was raised)."""
        reply = self._request({"op": "pm_exec", "code": code, "frame": frame}, "value")
        if reply is None:
            raise ForkpointError("the script's process is gone; resume to go on.")
        return bool(reply["ok"]), str(reply["text"])

    def frame(self, index: int) -> tuple[bool, str]:
        """Where frame ``index`` of the failure is (False, count) when there is none."""
        reply = self._request({"op": "frame", "index": index}, "value")
        if reply is None:
            raise ForkpointError("the script's process is gone; resume to go on.")
        return bool(reply["ok"]), str(reply["text"])

    # ----------------------------------------------------------------- moving around

    def rewind(self, ref: str | int) -> Rewound:
        """Replace the head with a fork of checkpoint ``ref`` (id, -N or label)."""
        node = self.tree.resolve(str(ref), self.current)
        before = self._state.base
        # A script's head stays at the checkpoint (status "paused") until resume.
        pause = {"pause": True} if self.script is not None and node.site is not None else None
        continued = self._replace_head(node, resume=pause)
        if before is not None:
            self._state.history.append(before)
        return Rewound(node.id, continued)

    def undo(self) -> Rewound:
        """Go back to where the head was before the last input or rewind."""
        history = self._state.history
        while history:
            cid = history.pop()
            if self.tree[cid].alive:
                return Rewound(cid, self._replace_head(self.tree[cid]))
        raise ForkpointError("there is nothing to undo.")

    def label(self, name: str, ref: str | None = None) -> Checkpoint:
        name = name.strip()
        if not name or name.isdigit() or (name.startswith("-") and name[1:].isdigit()):
            raise ForkpointError(f"{name!r} cannot be a label.", "use a name that is not a number")
        node = self.tree.resolve(ref, self.current) if ref else self.tree[self.current]
        node.label = name
        return node

    def diff(self, a: str | int, b: str | int) -> list[Change]:
        """Names whose values differ between two checkpoints."""
        left = self._summary(self.tree.resolve(str(a), self.current))
        right = self._summary(self.tree.resolve(str(b), self.current))
        changes = []
        for name in sorted(set(left) | set(right)):
            x, y = left.get(name), right.get(name)
            if x is None and y is not None:
                changes.append(Change(name, "added", None, y["preview"]))
            elif y is None and x is not None:
                changes.append(Change(name, "removed", x["preview"], None))
            elif x is not None and y is not None and (x["digest"], x["type"]) != (y["digest"], y["type"]):
                changes.append(Change(name, "changed", x["preview"], y["preview"]))
        return changes

    def _summary(self, node: Checkpoint) -> dict[str, dict[str, str]]:
        ch = self._checkpoint_channel(node)
        if not ch.send({"op": "probe"}):
            self._lost_checkpoint(node)
        try:
            reply = ch.recv(timeout=120)
        except TimeoutError:
            raise ForkpointError(f"checkpoint [{node.id}] did not answer in 120 s.") from None
        if reply is None:
            self._lost_checkpoint(node)
        if reply["op"] != "summary":
            raise ProtocolError(f"expected summary, got {reply['op']}")
        return {str(k): v for k, v in reply["names"].items() if isinstance(v, dict)}

    # ----------------------------------------------------------------- head replacement

    def _replace_head(self, target: Checkpoint, resume: Message | None = None) -> ExecResult | None:
        """Kill the head and fork a new one from ``target``; run on if it was mid-input."""
        self._kill_head(wait=False)
        self._spawn_head_from(target, resume)
        state = self._state
        state.tip = target.id
        if target.at_rest:
            state.base = target.id
            return None
        state.base = None
        state.source = target.source
        return self._finish_input()

    def _restore_head(self, cid: int) -> int:
        """Put a head back at ``cid`` or, if that checkpoint is gone, the nearest ancestor."""
        self._kill_head(wait=False)
        for aid in self.tree.ancestors(cid):
            node = self.tree[aid]
            if not (node.alive or node.stored) or not node.at_rest:
                continue
            try:
                self._spawn_head_from(node)
            except ForkpointError:
                continue
            self._state.base = self._state.tip = aid
            return aid
        raise ForkpointError("every checkpoint on this branch is gone; nothing to rewind to.")

    def _spawn_head_from(self, node: Checkpoint, resume: Message | None = None) -> None:
        """Fork a head from ``node``. A saved checkpoint restored lazily becomes the head
        itself and stays on disk: a fork would have the lazy-pages daemon fill the memory of
        both, one copy each, and the next use restores it again (a fraction of a second)."""
        become = self._lazy and node.stored and not node.alive
        ch = self._checkpoint_channel(node)
        op = "become_head" if become else "fork_head"
        if not ch.send({"op": op, "fg_pgid": os.getpgrp(), "resume": resume}):
            self._lost_checkpoint(node)
        if become:
            node.alive = False
            self._channels.pop(node.id).close()
        try:
            arrival = self._await_arrival(
                lambda h: h["role"] == "head" and h["origin"] == node.pid, HELLO_TIMEOUT, node.pid
            )
        except ForkpointError:
            self._lost_checkpoint(node)
        pid = int(arrival.hello["pid"])
        self._reaper.watch(pid)
        self._head = _Head(pid, arrival.channel)

    def _kill_head(self, wait: bool = True) -> None:
        """SIGKILL the head. Without ``wait`` it is reaped later: tearing down a big address
        space takes as long as forking it (20 ms per GiB of 4 KiB pages here), and the new
        head need not wait for that."""
        head, self._head = self._head, None
        if head is None:
            return
        kill(head.pid)
        head.channel.close()
        if wait:
            self._reaper.wait(head.pid, 2.0)
        else:
            self._reaper.discard(head.pid)

    def _bury_head(self) -> str:
        """The head is gone: reap it and say how it died."""
        assert self._head is not None
        head, self._head = self._head, None
        head.channel.close()
        if is_alive(head.pid):  # closed its connection but lives on: not a head any more
            kill(head.pid)
        return describe_status(self._reaper.wait(head.pid, 5.0))

    def _require_head(self) -> _Head:
        if self._head is None or self._head.gone or not is_alive(self._head.pid):
            if self._head is not None:
                death = self._bury_head()
                target = self._restore_head(self.current)
                self._emit("died", f"the head {death}; rewound to [{target}]")
            else:
                self._restore_head(self.current)
        assert self._head is not None
        return self._head

    # ----------------------------------------------------------------- checkpoints

    def _checkpoint_channel(self, node: Checkpoint) -> Channel:
        if not node.alive and node.stored:
            self._bring_back(node)
        if not node.alive:
            raise ForkpointError(f"checkpoint [{node.id}] was evicted.")
        ch = self._channels.get(node.id)
        if ch is None:
            arrival = self._await_arrival(
                lambda h: h["role"] == "checkpoint" and h["pid"] == node.pid, HELLO_TIMEOUT, node.pid
            )
            ch = self._channels[node.id] = arrival.channel
        return ch

    def _lost_checkpoint(self, node: Checkpoint) -> NoReturn:
        node.alive = False
        ch = self._channels.pop(node.id, None)
        if ch is not None:
            ch.close()
        raise ForkpointError(f"checkpoint [{node.id}] is gone (its process ended).")

    def _on_taken(self, msg: Message) -> None:
        state = self._state
        node = self.tree.add(state.tip, int(msg["pid"]), state.source, msg["label"], bool(msg["at_rest"]))
        if msg.get("site") is not None and self.script is not None:
            node.site, node.version = int(msg["site"]), len(self.script.versions) - 1
            node.called = tuple(str(name) for name in msg["called"])
            node.entry = msg.get("entry")
            if node.entry is None:
                node.source = self.script.describe(node.site)
            else:
                node.line, node.call = msg.get("line"), msg.get("call")
                node.outer = tuple(str(name) for name in msg["outer"])
                node.source = self.script.describe_call(node.entry, node.call, node.line)
        state.tip = node.id
        self._reaper.watch(node.pid)
        self._enforce_budget()

    def _measure(self, force: bool = False) -> bool:
        """Measure every live checkpoint; False when skipped as measured too recently."""
        now = time.monotonic()
        if not force and now - self._state.measured < MEASURE_EVERY:
            return False
        self._state.measured = now
        self._measure_all()
        return True

    def _measure_all(self) -> dict[int, ProcessMemory]:
        """Each live checkpoint's memory, also kept on its tree node for the eviction policy."""
        per = {}
        for node in self.tree.alive():
            measured = memory.measure(node.pid)
            if measured is not None:
                per[node.id] = measured
                node.memory = measured.uss + measured.page_tables
        return per

    def _enforce_budget(self, measure_all: bool = False) -> None:
        """Evict by policy when over budget. Between inputs every checkpoint is measured
        (a smaps_rollup read each, under a millisecond per GiB with huge pages); within an
        input, checkpoints may come fast, so at most once per MEASURE_EVERY."""
        measured = self._measure(force=measure_all)
        if not measured and len(self.tree.alive()) <= self.options.max_checkpoints:
            return  # nothing new to decide on: a site hit in a tight loop stays cheap
        evict = choose_evictions(
            self.tree, self.current, self.options.memory_budget, self.options.max_checkpoints
        )
        for cid in evict:
            node = self.tree[cid]
            node.alive = False
            ch = self._channels.pop(cid, None) or self._take_arrival(node.pid)
            if ch is not None:
                ch.send({"op": "exit"})
                ch.close()
            else:
                kill(node.pid)
        if evict and not self._state.evicted:
            # Said once: a site in a loop evicts at every checkpoint, and a line each would drown
            # the program's own output. :checkpoints and :tree show what is kept.
            self._state.evicted = True
            over_count = len(self.tree.alive()) + len(evict) > self.options.max_checkpoints
            limit = f"--max-checkpoints {self.options.max_checkpoints}" if over_count else "--memory-budget"
            ids = ", ".join(f"[{cid}]" for cid in evict)
            self._emit(
                "evicted", f"evicted {ids} to stay within {limit}; older ones will be thinned out quietly"
            )

    def _take_arrival(self, pid: int) -> Channel | None:
        arrival = self._arrivals.pop(pid, None)
        return arrival.channel if arrival else None

    # ----------------------------------------------------------------- the event loop

    def _await_reply(self, op: str, timeout: float | None = None) -> Message | None:
        """Pump until the head replies with ``op``; None if the head died first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._pump_until_reply(op, deadline)
        finally:
            self._tell_held()

    def _pump_until_reply(self, op: str, deadline: float | None) -> Message | None:
        state = self._state
        while True:
            if state.reply is not None:
                reply, state.reply = state.reply, None
                if reply["op"] != op:
                    raise ProtocolError(f"expected {op}, got {reply['op']}")
                return reply
            if self._head is None or self._head.gone:
                return None
            if deadline is not None and time.monotonic() > deadline:
                return None
            self._pump(0.2)
            if state.interrupts > state.handled:
                state.handled = state.interrupts
                self._on_ctrl_c()
            elif (
                state.interrupts == 1 and state.interrupted_at and time.monotonic() - state.interrupted_at > 1
            ):
                state.interrupted_at = 0.0
                self._emit(
                    "interrupt", "the input does not stop; press Ctrl-C again to kill the head and roll back"
                )

    def _on_ctrl_c(self) -> None:
        head = self._head
        if head is None:
            return
        if self._state.interrupts == 1:
            if _pgid(head.pid) != os.getpgrp():
                kill(head.pid, signal.SIGINT)  # not on our terminal's foreground group
            self._state.interrupted_at = time.monotonic()
        else:
            kill(head.pid)

    def _await_arrival(self, match: Callable[[Message], bool], timeout: float, watch: int) -> _Arrival:
        deadline = time.monotonic() + timeout
        while True:
            for pid, arrival in list(self._arrivals.items()):
                if match(arrival.hello):
                    return self._arrivals.pop(pid)
            if time.monotonic() > deadline or not is_alive(watch):
                self._reaper.reap()
                raise ForkpointError(f"process {watch} did not connect to the controller.")
            self._pump(0.05)

    def _pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for anything: new connections, messages from the head."""
        assert self._listener is not None
        head = self._head
        if head is not None and (early := head.channel.buffered()):
            # Frames that arrived with the head's hello, read along with it.
            for msg in early:
                self._on_head_message(msg)
            return
        readers: list[socket.socket] = [self._listener]
        if head is not None and not head.gone:
            readers.append(head.channel.sock)
        ready = select.select(readers, [], [], timeout)[0]
        if self._listener in ready:
            self._accept()
        if head is not None and head.channel.sock in ready:
            messages, eof = head.channel.read_ready()
            for msg in messages:
                self._on_head_message(msg)
            head.gone = head.gone or eof
        if head is not None and not ready and not is_alive(head.pid):
            head.gone = True  # died while a child of its own still holds the connection open
        self._reaper.reap()

    def _on_head_message(self, msg: Message) -> None:
        op = msg["op"]
        if op == "taken":
            self._on_taken(msg)
        elif op == "module":
            if self.script is not None:
                self.script.imported(str(msg["name"]), str(msg["path"]), str(msg["source"]))
        elif op == "notice":
            self._tell_held()
            self._emit("notice", str(msg["text"]))
            if self._head is not None:
                self._head.channel.send({"op": "noted"})  # the head waits: output stays in order
        elif op in ("result", "completions", "value"):
            self._state.reply = msg
        else:
            raise ProtocolError(f"head sent {op}")

    def _accept(self) -> None:
        assert self._listener is not None
        sock, _ = self._listener.accept()
        creds = peer_credentials(sock)
        ch = Channel(sock)
        if creds.uid != os.getuid():
            self._emit("notice", f"refused a connection from uid {creds.uid} (pid {creds.pid})")
            ch.close()
            return
        try:
            hello = ch.recv(timeout=5.0)
        except (TimeoutError, ProtocolError):
            hello = None
        if (
            hello is None
            or hello["op"] != "hello"
            or hello["pid"] != creds.pid
            or hello["version"] != PROTOCOL_VERSION
        ):
            ch.close()
            return
        self._arrivals[creds.pid] = _Arrival(hello, ch)

    def _emit(self, kind: str, text: str) -> None:
        if kind == "evicted" and self._state.base is None:
            # The running program owns the terminal: told when the head next waits, not in
            # the middle of a line it is printing.
            self._state.held.append(Event(kind, text))
            return
        self._on_event(Event(kind, text))

    def _tell_held(self) -> None:
        held, self._state.held = self._state.held, []
        for event in held:
            self._on_event(event)


@contextlib.contextmanager
def _counting_sigint(state: _State) -> Iterator[None]:
    """While an input runs, Ctrl-C is the head's: the controller only counts it.

    The terminal sends SIGINT to its whole foreground group, head and controller alike;
    the head turns it into KeyboardInterrupt in user code, and a second one makes the
    controller kill a head that does not stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def count(signum: int, frame: object) -> None:
        state.interrupts += 1

    previous = signal.signal(signal.SIGINT, count)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def _tell_progress(progress: Callable[[SaveProgress], None], where: SaveProgress, images: Path) -> None:
    progress(replace(where, written=written(str(images))))
