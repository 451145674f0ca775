"""The supervisor: every kill, wait and reap of the controller's processes, and teardown.

The controller is a child subreaper (PR_SET_CHILD_SUBREAPER): every descendant that loses its
parent (checkpoints of a killed head, the new heads forked from checkpoints) is reparented to
it, so it can reap them and read how a head died. Rule: no other part of the controller calls
``os.kill`` or ``waitpid`` on an agent; CRIU's own helpers are ended in persist/criu.py.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from forkpoint.launch import Place, agent_env, spawn_agent

__all__ = ["Death", "DeathKind", "Reaper", "Supervisor", "is_alive", "kill", "with_environ"]

_PR_SET_CHILD_SUBREAPER = 36
STOP_WAIT = 2.0  # seconds teardown waits for killed processes before it gives up on them


class DeathKind(Enum):
    SIGNAL = "signal"  # number: the signal
    EXIT = "exit"  # number: the exit status
    SECOND_INTERRUPT = "second interrupt"  # killed by the controller after a second Ctrl-C
    UNKNOWN = "unknown"  # not our child, or not reaped in time


@dataclass(frozen=True)
class Death:
    """How a head ended, as data; front ends put it in words."""

    kind: DeathKind
    number: int | None = None

    @classmethod
    def from_status(cls, status: int | None) -> Death:
        if status is None:
            return cls(DeathKind.UNKNOWN)
        if os.WIFSIGNALED(status):
            return cls(DeathKind.SIGNAL, os.WTERMSIG(status))
        return cls(DeathKind.EXIT, os.waitstatus_to_exitcode(status))


class Reaper:
    """Reaps children and remembers their statuses by pid.

    With ``everything`` (the CLI controller), it reaps any child, orphans included; in a
    library host (a test process) it reaps only pids it was told about, so it never steals
    another child's status from its owner.
    """

    def __init__(self, everything: bool) -> None:
        self.everything = everything
        self.known: set[int] = set()
        self.statuses: dict[int, int] = {}
        self.unwanted: set[int] = set()
        self._reaps = 0
        self._spawners: set[int] = set()  # threads that started children of ours

    def spawned(self, pid: int) -> None:
        """This thread started ``pid``: it is listed among this thread's children."""
        self._spawners.add(threading.get_native_id())
        self.known.add(pid)

    def watch(self, pid: int) -> None:
        self.known.add(pid)

    def discard(self, pid: int) -> None:
        """Reap ``pid`` when it ends, but keep no status for it."""
        self.known.add(pid)
        self.unwanted.add(pid)

    def reap(self) -> None:
        if self.everything:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                self._record(pid, status)
        # Only the known pids that are our children now (zombies included) can be reaped: the
        # checkpoints are mostly children of a head. Asking each pid was O(checkpoints) syscalls
        # on every pump (1 ms per pump at 200), a per-input cost that grew with the tree.
        mine = _own_children(self._spawners)
        self._reaps += 1
        prune = self._reaps % PRUNE_EVERY == 0
        for pid in list(self.known):
            if mine is not None and pid not in mine:
                if prune and not os.path.exists(f"/proc/{pid}"):
                    self.known.discard(pid)  # gone without being ours (reaped by its head)
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                # Not (or not yet) our child: still a child of a live head, or already gone.
                if not os.path.exists(f"/proc/{pid}"):
                    self.known.discard(pid)
                continue
            if done:
                self._record(done, status)

    def _record(self, pid: int, status: int) -> None:
        self.known.discard(pid)
        if pid in self.unwanted:
            self.unwanted.discard(pid)
        else:
            self.statuses[pid] = status

    def wait(self, pid: int, timeout: float) -> int | None:
        """Status of ``pid`` once it is gone (None if it was not ours or did not end in time)."""
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            if pid in self.statuses:
                return self.statuses.pop(pid)
            if not is_alive(pid):
                # It may have become a zombie between the reap and this look: reap once more
                # (a status lost here made a SIGKILLed head's death "unknown" on a busy machine).
                self.reap()
                return self.statuses.pop(pid, None)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.001)


PRUNE_EVERY = 64  # reaps between looks for known pids that vanished without being ours


def _own_children(spawners: Iterable[int]) -> set[int] | None:
    """This process's children (a zombie stays listed until reaped), or None where /proc
    does not list them (no CONFIG_PROC_CHILDREN).

    /proc lists a child under the thread that forked it; an orphan reparented to this
    subreaper, or the child of a thread that ended, goes to the first live thread, the main
    one (Python's main thread outlives the others). So the main thread and the ``spawners``
    are enough: a kernel has a dozen threads, and reading each one's list made up 1 ms of
    every cell."""
    found: set[int] = set()
    for tid in {os.getpid(), *spawners}:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                found.update(int(k) for k in f.read().split())
        except FileNotFoundError:
            if os.path.isdir(f"/proc/self/task/{tid}"):
                return None
        except OSError:
            continue
    return found


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] != b"Z"


def with_environ(name: str, value: str) -> list[int]:
    """Pids of live processes whose environment has ``name=value`` (forked children share
    their parent's environment block, so this finds every agent of a marked controller)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc's children lists (psutil scans all of /proc,
    and its import alone costs the start-up of ``forkpoint run`` 8 ms)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except FileNotFoundError:
                if os.path.isdir(f"/proc/{parent}/task/{tid}"):  # a kernel without CONFIG_PROC_CHILDREN
                    return _descendants_by_scan(pid)
                continue
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def _descendants_by_scan(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Supervisor:
    """Owns the controller's processes: spawning the first head, every kill, wait and reap,
    CRIU's lazy-pages daemons, and the graduated teardown (EOF, wait, SIGKILL, wait)."""

    def __init__(self, reap_everything: bool) -> None:
        self.everything = reap_everything
        self.reaper = Reaper(reap_everything)
        self._daemons: list[subprocess.Popen[bytes]] = []

    def become_subreaper(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")

    def spawn(self, argv: list[str], env: dict[str, str], stdio: tuple[int, int, int] | None) -> int:
        """Start a process (watched); with ``stdio``, those fds become its 0, 1, 2."""
        actions = []
        if stdio is not None:
            actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
        self.reaper.spawned(pid)
        return pid

    def spawn_agent(
        self, python: str, place: Place, stdio: tuple[int, int, int] | None, pipes: bool = False
    ) -> int:
        """Start the first head (``launch.spawn_agent``), watched."""
        pid = spawn_agent(python, place, stdio, pipes)
        self.reaper.spawned(pid)
        return pid

    def why_no_agent(self, python: str, rundir: str) -> str:
        """Why ``python`` ran no agent that connected, in one sentence: asked its version, it
        is not a Python, or not one forkpoint supports, or it cannot import forkpoint."""
        probe = "import sys; print('%d.%d' % sys.version_info[:2]); import forkpoint.agent"
        try:
            env = agent_env(python, rundir)
            done = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{python} did not answer as a Python interpreter would ({exc})."
        version = done.stdout.strip()
        if not re.fullmatch(r"3\.\d+", version):
            status = done.returncode
            return f"{python} is not a Python interpreter (asked its version, it exited {status})."
        if not (3, 11) <= tuple(map(int, version.split("."))) <= (3, 13):
            return f"{python} is Python {version}; forkpoint runs code on Python 3.11 to 3.13."
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no error shown"])[-1]
            return f"{python} cannot import forkpoint's agent: {last}."
        return f"the Python process ({python}) ended before it connected to the controller."

    def watch(self, pid: int) -> None:
        self.reaper.watch(pid)

    def reap(self) -> None:
        self.reaper.reap()

    def signal(self, pid: int, sig: int) -> None:
        kill(pid, sig)

    def kill(self, pid: int, wait: float | None = None) -> Death | None:
        """SIGKILL ``pid``; with ``wait``, reap it and say how it ended. Without, it is reaped
        later: tearing down a big address space takes as long as forking it (20 ms per GiB
        of 4 KiB pages here), and whoever replaces it need not wait for that."""
        kill(pid)
        if wait is None:
            self.reaper.discard(pid)
            return None
        return Death.from_status(self.reaper.wait(pid, wait))

    def bury(self, pid: int) -> Death:
        """``pid`` closed its connection: make sure it is dead, reap it, say how it ended."""
        if is_alive(pid):  # closed its connection but lives on: not an agent any more
            kill(pid)
        return Death.from_status(self.reaper.wait(pid, 5.0))

    def wait_gone(self, pids: Iterable[int], timeout: float = STOP_WAIT) -> list[int]:
        """Reap until every one of ``pids`` is gone or ``timeout`` passes; those still alive."""
        pids = list(pids)
        deadline = time.monotonic() + timeout
        pause = 0.0005  # most are gone within a millisecond or two: look often at first
        while (alive := [p for p in pids if is_alive(p)]) and time.monotonic() < deadline:
            self.reaper.reap()
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
        return alive

    def kill_descendants(self, pid: int) -> None:
        """Processes the user's code started must not outlive the tool either."""
        children = descendants(pid)
        for child in children:
            kill(child)
        self.wait_gone(children)

    def adopt_daemon(self, daemon: subprocess.Popen[bytes]) -> None:
        """A lazy-pages daemon: it exits once the memory is in place; ended at teardown if not."""
        self._daemons = [d for d in self._daemons if d.poll() is None]
        self._daemons.append(daemon)

    def teardown(self, agents: list[int]) -> None:
        """After the head: parked checkpoints (already sent EOF) are given a moment to exit,
        then killed; daemons end; then, for the CLI, any orphan."""
        for pid in self.wait_gone(agents):
            kill(pid)
        for daemon in self._daemons:  # done once the memory is in place; not if we stop first
            if daemon.poll() is None:
                daemon.kill()
            daemon.wait()
        self._daemons = []
        if self.everything:
            self.kill_descendants(os.getpid())
        self.reaper.reap()
