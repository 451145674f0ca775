"""Sessions: saving checkpoints with CRIU and restoring them, orchestrated over persist/
(criu.py talks to CRIU, pages.py shares unchanged pages on disk, store.py keeps the folders).

"Restore" means one thing in forkpoint: CRIU bringing a saved process back. (Putting the head
back at a checkpoint after a failed input is a *roll-back*, a fork.)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from forkpoint import leftovers, paths
from forkpoint.channel import private_dir
from forkpoint.controller import memory
from forkpoint.controller.hub import Hub
from forkpoint.controller.interrupts import remembered_sigint
from forkpoint.controller.pool import CheckpointPool
from forkpoint.controller.results import Saved, SaveProgress
from forkpoint.controller.supervisor import Supervisor
from forkpoint.errors import ForkpointError, Reason
from forkpoint.persist import carry, needs, pages, store
from forkpoint.persist.criu import TICK, Criu, dump, find_criu, require_privileges, restore, written
from forkpoint.tree import Checkpoint, CheckpointState

__all__ = ["MAX_SAVED", "SessionKeeper"]

MAX_SAVED = 32  # checkpoints a script session keeps at most
CANDIDATE_TIMEOUT = 30.0  # seconds a checkpoint has to fork the process CRIU dumps


class SessionKeeper:
    def __init__(
        self,
        pool: CheckpointPool,
        hub: Hub,
        supervisor: Supervisor,
        stdio: Callable[[], tuple[int, int, int]],
        lazy: bool,
    ) -> None:
        self._pool = pool
        self._hub = hub
        self._supervisor = supervisor
        self._stdio = stdio  # the fds a restored process gets as 0, 1, 2
        self._lazy = lazy  # restore with lazy pages (userfaultfd): ready at once, memory follows
        self._held: int | None = None  # the lock on the session this controller restored from
        self._verifier: _Verifier | None = None  # the pages' check behind a lazy restore
        self._stored: tuple[Path, str, int] | None = None  # the restored session's dir, secret, uid
        self._needs: dict[str, list[object]] = {}  # what its checkpoints need of this machine
        self.rundir = ""

    # ----------------------------------------------------------------- save

    def save(
        self,
        name: str,
        nodes: list[Checkpoint],
        source: str,
        script: dict[str, object] | None,
        progress: Callable[[SaveProgress], None] | None,
        progress_every: float | None = None,
        disk_budget: int | None = None,
        before: carry.Previous | None = None,
        replace: bool = False,
    ) -> Saved:
        """Dump ``nodes`` as session ``name``, in their order (the first is the one it is saved
        at and restores to; the others are written while ``disk_budget`` allows, the first and
        labelled ones always), each sharing unchanged pages with the nearest one already on
        disk. Those that ``before``, the last save of ``name`` (``previous``), wrote are
        hard-linked from it, not dumped again (``carry``). Built hidden and renamed into
        place, so it is whole or absent. One save of a name at a time, over a session of that
        name only if ``replace``, and never over one a forkpoint has restored."""
        self.verified()
        with store.one_writer(name), remembered_sigint() as pressed:
            criu = find_criu()
            require_privileges("saving a session")
            started = time.monotonic()
            at = nodes[0]
            final = store.sessions_dir() / store.check_name(name)
            if not replace and store.exists(name):  # under the lock: a save that started meanwhile
                raise ForkpointError(
                    f'there is a saved session named "{name}" already.', reason=Reason.SESSION_EXISTS
                )
            if self._stored is not None and self._stored[0] == final:
                raise ForkpointError(
                    f"session {name!r} is the one this forkpoint was restored from, and its checkpoints on "
                    "disk are read from it: it cannot be replaced while this forkpoint runs.",
                    "save under another name",
                )
            if leftovers.in_use(final):
                raise ForkpointError(
                    f"session {name!r} is in use (a forkpoint has it restored); it cannot be replaced now."
                )
            every = self._pool.tree.nodes
            carried = before.carried({n.id for n in nodes}) if before is not None else set()
            secret = before.session.secret if before is not None and carried else secrets.token_hex(16)
            if at.alive:
                _refuse_network_sockets(at)  # the others with one are left out of the save
            # to dump: the one saved at (whose sentence names a socket it has), unless its images
            # are carried too, and the others still alive with none
            fresh = [
                n
                for n in nodes
                if n.id not in carried and (n is at or n.alive and _network_socket(n) is None)
            ]
            attach = paths.attach_file(secret, os.getuid())
            with _attach_turn(Path(attach)), store.build(name, replace) as folder:
                root = folder / "images"
                known: dict[int, dict[str, pages.Index] | None] = {}  # on disk here: id -> indexes
                for cid in sorted(carried):
                    assert before is not None
                    carry.link_images(before.images / str(cid), root / str(cid))
                    known[cid] = None  # read when a dump shares with it
                dumped: list[int] = []
                for index, node in enumerate(fresh, 1):
                    images = root / str(node.id)
                    self._dump(
                        criu,
                        node,
                        images,
                        attach,
                        f"{secret}-{node.id}",
                        progress,
                        progress_every,
                        SaveProgress(node.id, index, len(fresh), 0, 0),
                    )
                    pages.mark_lazy(images)
                    near = min(known, key=lambda cid: (abs(cid - node.id), cid), default=None)
                    if near is not None and known[near] is None:
                        known[near] = pages.chain_index(root / str(near))
                    previous = None if near is None else (root / str(near), known[near] or {})
                    known[node.id] = pages.share_or_index(images, previous)
                    dumped.append(node.id)
                    if _optional(every, at, node.id) and _over(folder, disk_budget):
                        shutil.rmtree(images)  # the newest on disk: nothing reads pages from it yet
                        dumped.pop()
                        break
                images_known = before.manifest_of(carried) if before else None
                ordered = sorted(every.values(), key=lambda n: n.id)
                while True:
                    kept = sorted(carried | set(dumped))
                    session = store.Session(name, time.time(), source, at.id, len(kept), secret=secret)
                    session.tree = [n.to_meta() for n in ordered if n.id <= max(kept)]
                    session.kept, session.script = kept, script
                    session.images = images_known = store.manifest(root, images_known)
                    session.needs = _needs(root, kept, before.session.needs if before else None)
                    session.criu = "{}.{}".format(*criu.version)
                    store.write_meta(folder, session)
                    # meta.json counts too: if the record passes the budget, the newest optional one goes
                    if not (dumped and _optional(every, at, dumped[-1]) and _over(folder, disk_budget)):
                        break
                    (folder / "meta.json").unlink()
                    shutil.rmtree(root / str(dumped.pop()))
                if pressed:  # a Ctrl-C whose KeyboardInterrupt was dropped: the save is still cancelled
                    raise KeyboardInterrupt
            size = store.size_of(store.sessions_dir() / name)
            source = before.images.parent.name if before is not None and carried else ""
            return Saved(name, at.id, size, time.monotonic() - started, kept, sorted(carried), source)

    def _dump(
        self,
        criu: Criu,
        node: Checkpoint,
        images: Path,
        attach: str,
        secret: str,
        progress: Callable[[SaveProgress], None] | None,
        progress_every: float | None,
        where: SaveProgress,
    ) -> None:
        """CRIU dumps a fork of ``node`` (its candidate) into ``images``."""
        images.mkdir(mode=0o700, parents=True)
        candidate = self._candidate(node, attach, secret)
        tick = None
        if progress is not None:
            resident = memory.measure(node.pid)  # what the candidate, its fork, holds
            tick = _Progress(progress, replace(where, expected=resident.rss if resident else 0), images)
        try:
            interval = TICK if progress_every is None else progress_every
            dump(criu, candidate, str(images), self.rundir or str(images.parent.parent), tick, interval)
        finally:
            self._supervisor.kill(candidate)

    def previous(self, name: str) -> carry.Previous | None:
        """The last save of session ``name``, for a save of it again to take images from."""
        return carry.previous(name, {cid: n.token for cid, n in self._pool.tree.nodes.items()})

    def restored_from(self) -> carry.Previous | None:
        """The session this forkpoint was restored from, for a save under another name to take
        the images of its checkpoints from: those still on disk are not alive to be dumped,
        and would be left out of the save (the restored session's history lost with them)."""
        if self._stored is None:
            return None
        return self.previous(self._stored[0].name)

    def _candidate(self, node: Checkpoint, attach: str, secret: str) -> int:
        """Have ``node`` fork the process tree CRIU dumps (its own PID namespace)."""
        reply = self._pool.ask(
            node, {"op": "save", "attach": attach, "secret": secret}, "candidate", CANDIDATE_TIMEOUT
        )
        if reply["pid"] <= 0:
            raise ForkpointError("the checkpoint could not fork a process to save (PID namespaces refused?).")
        self._supervisor.watch(int(reply["pid"]))
        return int(reply["pid"])

    # ----------------------------------------------------------------- restore

    def open(self, name: str) -> store.Session:
        """Check session ``name`` and put its checkpoints in the tree, on disk. Nothing is
        restored yet: each restored process holds all of its memory (restored processes share
        no pages), so a script's ten checkpoints of 1 GB each come back only when needed."""
        session, folder = store.load(name)
        held = leftovers.share(folder)
        if held is None:
            raise ForkpointError(
                f"session {name!r} is being removed or replaced; try again when that is done."
            )
        self._held = held  # for this controller's life: no rm of it, no save over it, while in use
        deferred = store.check_images(name, folder / "images", session.images, defer_pages=self._lazy)
        if deferred:
            self._verifier = _Verifier(name, folder / "images", deferred)
        needs.check_criu(name, session.criu, find_criu().version)
        require_privileges("restoring a session")
        if session.checkpoint in session.kept:  # the one it brings back first; bring_back checks each
            needs.check(name, folder / "images" / str(session.checkpoint), session.needs)
        on_disk = CheckpointState.LAZY_ON_DISK if self._lazy else CheckpointState.ON_DISK
        kept = set(session.kept)
        for entry in session.tree:
            state = on_disk if entry.get("id") in kept else CheckpointState.UNSAVED
            self._pool.tree.restore_node(entry, state)
        self._stored = (folder, session.secret, session.uid)
        self._needs = session.needs
        self._pool.bring_back = self.bring_back
        return session

    def verified(self) -> None:
        """Before the restored session is first used: its pages were what was saved, or a
        sentence saying they were not (each time it is asked: the session is not used)."""
        if self._verifier is not None:
            self._verifier.wait()

    def close(self) -> None:
        if self._verifier is not None:
            self._verifier.stop()
        if self._held is not None:
            os.close(self._held)
            self._held = None

    def bring_back(self, node: Checkpoint) -> None:
        """Restore a checkpoint of the session this controller started from: CRIU brings it
        back, it finds this controller through the session's attach file, takes the stdio
        fds and parks (lazily restored, it parks until it becomes the head)."""
        assert self._stored is not None
        folder, secret, uid = self._stored
        needs.check(folder.name, folder / "images" / str(node.id), self._needs)
        attach = Path(paths.attach_file(secret, uid))
        with _attach_turn(attach):
            store.write_private(attach, {"socket": self._hub.socket_path, "controller": os.getpid()})
            try:
                self._restore(folder / "images" / str(node.id), f"{secret}-{node.id}", node)
            finally:
                attach.unlink(missing_ok=True)

    def _restore(self, images: Path, secret: str, node: Checkpoint) -> None:
        work = self.rundir or str(images)
        if self._lazy:
            work = tempfile.mkdtemp(prefix=f"lazy-{node.id}-", dir=work)  # each daemon listens in its own
        init, daemon = restore(find_criu(), str(images), work, self._lazy)
        if daemon is not None:
            self._supervisor.adopt_daemon(daemon)
        self._supervisor.watch(init)  # the init of its PID namespace; the checkpoint is its child
        arrival = self._hub.await_arrival(
            lambda h: h["role"] == "restored" and h.get("secret") == secret, init
        )
        socket.send_fds(arrival.channel.sock, [b"F"], list(self._stdio()))
        self._pool.adopt(node, int(arrival.hello["pid"]), arrival.channel)


def _optional(every: dict[int, Checkpoint], at: Checkpoint, cid: int) -> bool:
    """Whether a save may leave checkpoint ``cid`` out for its disk budget: all but the one
    saved at and labelled ones."""
    return cid != at.id and every[cid].label is None


def _over(folder: Path, disk_budget: int | None) -> bool:
    return disk_budget is not None and store.size_of(folder) > disk_budget


def _needs(root: Path, kept: list[int], before: dict[str, list[object]] | None) -> dict[str, list[object]]:
    """What the saved checkpoints need of a machine, for a restore to compare (persist.needs)."""
    union: dict[str, needs.Need] = {}
    for cid in reversed(kept):  # the newest first: a file whose size changed is as they last saw it
        for path, need in needs.needed(root / str(cid)).items():
            union.setdefault(path, need)
    return needs.record(union, before)


@contextlib.contextmanager
def _attach_turn(attach: Path) -> Iterator[None]:
    """The attach file is the one place a restored process looks for its controller, named
    for its session's secret, which copies of the session (renamed, imported) share. One
    forkpoint at a time uses it: a restore (two at once would swap their processes) or a save
    whose candidates wait for it (one written then would reach them before they are dumped).
    A file left by a forkpoint killed mid-restore is removed first, for the same reason."""
    try:
        private_dir(str(attach.parent.parent))
        private_dir(str(attach.parent))
    except PermissionError:  # another user made it first: the path is fixed, so say whose it is
        raise ForkpointError(
            f"{attach.parent.parent} belongs to another user (uid {os.lstat(attach.parent.parent).st_uid}), "
            "and restored processes look for their controller in it.",
            "remove it (it holds only the attach files of restores in progress)",
        ) from None
    with leftovers.exclusive(attach.with_suffix(".lock")):
        attach.unlink(missing_ok=True)
        yield


class _Progress:
    """Tells ``progress`` how much of one checkpoint is written. The pages files' sizes were
    seen to shrink for a moment while CRIU writes (26 MB after 28.5 MB in one 256 MB dump);
    a progress line never goes back, so the largest size seen so far is what is told."""

    def __init__(self, progress: Callable[[SaveProgress], None], where: SaveProgress, images: Path) -> None:
        self._progress, self._where, self._images = progress, where, str(images)

    def __call__(self) -> None:
        self._where = replace(self._where, written=max(self._where.written, written(self._images)))
        self._progress(self._where)


def _refuse_network_sockets(node: Checkpoint) -> None:
    """CRIU cannot save an open TCP or UDP socket (it fails deep inside, in its own words:
    "sockets: Can't get 1:16 opt"); say which one, and what to do, before it starts."""
    found = _network_socket(node)
    if found is not None:
        first, more = found
        raise ForkpointError(
            f"[{node.id}] has a network socket open ({first}){more}, which CRIU cannot save.",
            "close it in the program (sock.close()), take a checkpoint, and save that one",
        )


def _network_socket(node: Checkpoint) -> tuple[str, str] | None:
    """The first TCP or UDP socket ``node``'s process has open ("UDP 127.0.0.1:5000"), and
    how many more (" (and 2 more)" or ""), if it has one."""
    import psutil

    try:
        sockets = psutil.Process(node.pid).net_connections(kind="inet")
    except psutil.Error:
        return None
    if not sockets:
        return None
    first = sockets[0]
    kind = "TCP" if first.type == socket.SOCK_STREAM else "UDP"
    local = f"{first.laddr.ip}:{first.laddr.port}" if first.laddr else "?"
    remote = f" to {first.raddr.ip}:{first.raddr.port}" if first.raddr else ""
    more = f" (and {len(sockets) - 1} more)" if len(sockets) > 1 else ""
    return f"{kind} {local}{remote}", more


class _Verifier:
    """The check of a lazily restored session's pages files, in a process of its own."""

    def __init__(self, name: str, images: Path, files: list[tuple[str, str]]) -> None:
        self._name, self._images = name, images
        self._failure: str | None = None
        self._process: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "forkpoint.persist.verify"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(files))
        self._process.stdin.close()
        self._process.stdin = None  # written whole: communicate() has only stdout to read

    def wait(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            answer, _ = process.communicate()
            try:
                bad = json.loads(answer)["bad"]
            except (ValueError, KeyError, TypeError):
                bad = "?"
            if bad is not None:
                shown = Path(bad) if bad != "?" else self._images / "?"
                self._failure = store.damaged(self._name, self._images, shown)
        if self._failure is not None:
            raise ForkpointError(self._failure + " Nothing the restored process holds was used.")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.communicate()
            self._process = None
