"""Process plumbing for the controller: subreaper, spawning the first head, reaping, killing.

The controller is a child subreaper (PR_SET_CHILD_SUBREAPER): every descendant that loses its
parent (checkpoints of a killed head, the new heads forked from checkpoints) is reparented to
it, so it can reap them and read how a head died.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

__all__ = ["Reaper", "describe_status", "make_subreaper", "spawn"]

_PR_SET_CHILD_SUBREAPER = 36
_WHY = {
    int(signal.SIGSEGV): "segmentation fault",
    int(signal.SIGKILL): "killed from outside, for example by the OOM killer",
    int(signal.SIGABRT): "aborted",
    int(signal.SIGBUS): "bus error",
    int(signal.SIGFPE): "arithmetic fault",
}


def make_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def spawn(argv: list[str], env: dict[str, str], stdio: tuple[int, int, int] | None) -> int:
    """Start a process; with ``stdio``, those fds become its 0, 1, 2."""
    actions = []
    if stdio is not None:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions)


def describe_status(status: int | None) -> str:
    """How a process ended, for a user: 'was killed by SIGSEGV (segmentation fault)'."""
    if status is None:
        return "is gone"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        why = _WHY.get(sig)
        return f"was killed by {name}" + (f" ({why})" if why else "")
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


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
        for pid in list(self.known):
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
                return None
            if time.monotonic() > deadline:
                return None
            time.sleep(0.001)


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


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
