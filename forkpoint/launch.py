"""The controller's place (runtime dir, its lock, the listening socket) and the first head,
made before the controller is imported.

Start-up is two interpreters in a row: the controller's (its imports are most of its time)
and the head's (an interpreter and the agent). The CLI calls ``prepare`` and ``spawn_agent``
first thing, so the head starts while the controller imports, on the other core; the
controller adopts both (``Controller(launched=...)``). A library host gets the same through
the controller's own start. This module imports only what those two calls need.
"""

from __future__ import annotations

import os
import socket
import sys

from forkpoint import leftovers, paths
from forkpoint.channel import listen, private_dir
from forkpoint.errors import ForkpointError

__all__ = ["Place", "agent_env", "prepare", "spawn_agent"]


class Place:
    """A controller's runtime dir (held by a lock while it lives), its socket, and the root
    it made of its own when the shared one was another user's (``refused``)."""

    def __init__(self, rundir: str, lock: int, listener: socket.socket, own_root: str | None, refused: str):
        self.rundir, self.lock, self.listener = rundir, lock, listener
        self.socket_path = os.path.join(rundir, "control.sock")
        self.own_root, self.refused = own_root, refused
        self.head: int | None = None  # the first head, when spawned here

    def close(self) -> None:
        """Undo all of it (the controller never adopted it): kill the head, remove the dirs."""
        if self.head is not None:
            try:
                os.kill(self.head, 9)
                os.waitpid(self.head, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.listener.close()
        self.remove()

    def remove(self) -> None:
        """Remove the runtime dir (and a root of our own), then drop the lock: last, so no
        other forkpoint's sweep takes the dir for a dead one's while it is still ours."""
        import shutil

        shutil.rmtree(self.rundir, ignore_errors=True)
        if self.own_root is not None:
            shutil.rmtree(self.own_root, ignore_errors=True)
        os.close(self.lock)


def prepare() -> Place:
    """A fresh private runtime dir under the runtime root, locked, with a listening socket;
    a private root of our own if the shared one was made by another user."""
    shared = paths.runtime_root()
    own_root = None
    try:
        root = private_dir(shared)
    except PermissionError:
        own_root = root = _fresh_dir(paths.short_temp_dir(), f"forkpoint-{os.getuid()}-")
    rundir = _fresh_dir(root, f"{os.getpid()}-")
    lock = leftovers.hold(rundir)
    listener = listen(os.path.join(rundir, "control.sock"))
    return Place(rundir, lock, listener, own_root, shared)


def _fresh_dir(parent: str, prefix: str) -> str:
    """mkdtemp without tempfile (whose import costs the start-up 10 ms)."""
    for _ in range(100):
        path = os.path.join(parent, prefix + os.urandom(6).hex()[:8])
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no fresh name under {parent}")


def spawn_agent(python: str, place: Place, stdio: tuple[int, int, int] | None, pipes: bool = False) -> int:
    """Start the first head, ``python -m forkpoint.agent``, told where the controller is (and,
    with ``pipes``, that its fds 1 and 2 are the engine's pipes: see process_state.settle)."""
    env = agent_env(python, place.rundir)
    env.update(FORKPOINT_SOCKET=place.socket_path, FORKPOINT_CONTROLLER=str(os.getpid()))
    if pipes:
        env["FORKPOINT_OUTPUT"] = "pipes"
    actions = [] if stdio is None else [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    argv = [python, "-m", "forkpoint.agent"]
    try:
        place.head = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    except OSError as exc:
        raise ForkpointError(f"cannot start {python}: {exc.strerror}.") from None
    return place.head


def agent_env(python: str, rundir: str) -> dict[str, str]:
    """The environment ``python`` imports the agent in: forkpoint's own interpreter finds it,
    another one gets the folder of ``_agent_path`` first on its path."""
    env = dict(os.environ)
    if os.path.abspath(python) != os.path.abspath(sys.executable):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_agent_path(rundir), env.get("PYTHONPATH")]))
    return env


def _agent_path(rundir: str) -> str:
    """A folder holding only a link to the forkpoint package, for another interpreter (a
    project's own virtualenv, even one of the same base python) to import the agent from: the
    agent needs the standard library only, and putting forkpoint's own site-packages on that
    interpreter's path would shadow the project's numpy with ours."""
    folder = os.path.join(rundir, "agent-path")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    link = os.path.join(folder, "forkpoint")
    if not os.path.islink(link):
        os.symlink(os.path.dirname(os.path.abspath(__file__)), link)
    return folder
