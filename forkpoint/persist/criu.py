"""Finding CRIU and saying what it can do on this machine.

``make install`` puts a CRIU 4.x next to the venv's python (``tools/get_criu.py``); a
``FORKPOINT_CRIU`` environment variable or a ``criu`` on PATH are used otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkpoint.errors import ForkpointError

__all__ = ["Criu", "dump", "find_criu", "privileges", "require_privileges", "restore"]

MIN_VERSION = (4, 0)
CAP_SYS_ADMIN = 21
CAP_CHECKPOINT_RESTORE = 40


@dataclass(frozen=True)
class Criu:
    path: str
    version: tuple[int, int]

    def check(self) -> tuple[bool, str]:
        """``criu check``: whether dump and restore can work here, and CRIU's verdict."""
        done = subprocess.run([self.path, "check"], capture_output=True, text=True, timeout=60)
        return _verdict(done, f"exit status {done.returncode}")

    def lazy_pages(self) -> tuple[bool, str]:
        done = subprocess.run(
            [self.path, "check", "--feature", "uffd-noncoop"], capture_output=True, text=True, timeout=60
        )
        return _verdict(done, "")


def _verdict(done: subprocess.CompletedProcess[str], silent: str) -> tuple[bool, str]:
    """What a ``criu check`` concluded, in its words. CRIU prints its verdict ("Looks good.",
    "uffd-noncoop is supported") on stdout and its log on stderr, so a check that passed is told
    by stdout alone: the log may still end in a warning that is no verdict, such as the "Can't
    keep kdat cache on non-tempfs" of the first CRIU run on a machine whose /run is no tmpfs.
    A check that failed is told by its last line, the log's last error; ``silent`` when none."""
    ok = done.returncode == 0
    text = (done.stdout if ok else done.stdout + done.stderr).strip().splitlines()
    return ok, text[-1] if text else silent


def privileges() -> tuple[bool, str]:
    """Whether this process may dump and restore (CRIU needs CAP_SYS_ADMIN for the PID
    namespace of a saved process, and CAP_CHECKPOINT_RESTORE or root for the rest), and which
    of them it has. Effective capabilities, not the uid: root without them cannot either."""
    caps = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
    admin, checkpoint = caps >> CAP_SYS_ADMIN & 1, caps >> CAP_CHECKPOINT_RESTORE & 1
    if admin and checkpoint:
        return True, "root" if os.geteuid() == 0 else "CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE"
    missing = " and ".join(
        n for n, has in (("CAP_SYS_ADMIN", admin), ("CAP_CHECKPOINT_RESTORE", checkpoint)) if not has
    )
    return False, f"without {missing}"


def require_privileges(doing: str) -> None:
    """One sentence, before anything is started, when CRIU could not do it."""
    ok, what = privileges()
    if not ok:
        raise ForkpointError(
            f"{doing} needs root (or CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE); this process runs {what}.",
            "forkpoint doctor says what works here",
        )


def _candidates() -> list[str]:
    chosen = os.environ.get("FORKPOINT_CRIU", "")
    if chosen:
        return [chosen] if os.access(chosen, os.X_OK) else []
    found = []
    found.append(str(Path(sys.executable).with_name("criu")))
    found.append(
        shutil.which("criu", path=os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin") or ""
    )
    return [c for c in dict.fromkeys(found) if c and os.access(c, os.X_OK)]


def version_of(path: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"Version:\s*(\d+)\.(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else None


def find_criu() -> Criu:
    """The CRIU to use, or one sentence on why there is none."""
    too_old = []
    for path in _candidates():
        version = version_of(path)
        if version is None:
            continue
        if version >= MIN_VERSION:
            return Criu(path, version)
        too_old.append(f"{path} is {version[0]}.{version[1]}")
    if too_old:
        raise ForkpointError(
            f"CRIU is too old: {', '.join(too_old)}; forkpoint needs 4.0 or newer.",
            "make install fetches one into the venv",
        )
    raise ForkpointError("CRIU is not installed.", "make install fetches one into the venv")


def _client(criu: Criu, images: str, work: str, log: str) -> tuple[Any, list[int]]:
    import pycriu  # type: ignore[import-untyped]

    client = pycriu.criu()
    client.use_binary(criu.path)
    fds = [os.open(images, os.O_DIRECTORY), os.open(work, os.O_DIRECTORY)]
    client.opts.images_dir_fd, client.opts.work_dir_fd = fds
    client.opts.log_file = log
    client.opts.log_level = 2
    return client, fds


_GONE = re.compile(r"Can't open file (\S+) on restore: (.+)$")
_CHANGED = re.compile(r"File (\S+) has bad size (\d+) \(expect (\d+)\)")
_NOISE = ("RLIMIT_NOFILE", "Restoring FAILED", "Dumping FAILED", "Unable to open fd=")


def _failure(work: str, log: str, exc: Exception) -> str:
    """CRIU's own words for why it failed, from its log: the first error that is not a
    consequence of another, with the two common ones (a file gone or changed) said plainly."""
    try:
        with open(os.path.join(work, log), errors="replace") as f:
            errors = [line.strip() for line in f if "Error" in line]
    except OSError:
        errors = []
    for line in errors:
        if gone := _GONE.search(line):
            return f"/{gone.group(1)}, a file the session had open, is gone ({gone.group(2)})"
        if changed := _CHANGED.search(line):
            return f"/{changed.group(1)}, a file the session had open, changed since the save"
    causes = [e for e in errors if not any(n in e for n in _NOISE)]
    if causes:
        return re.sub(r"^(\d+: )?Error \([^)]*\): ", "", causes[0]).rstrip(".")
    return errors[-1] if errors else str(exc)


DEADLINE = 300.0  # seconds: CRIU has been seen to spin forever on a damaged image
TICK = 0.25  # seconds between progress calls during a dump


def _within_deadline(
    client: Any,
    call: Callable[[], Any],
    what: str,
    tick: Callable[[], None] | None = None,
    every: float = TICK,
) -> Any:
    """Run a pycriu call; past DEADLINE, kill its CRIU and say so. ``tick`` is called every
    ``every`` seconds meanwhile (SIGALRM for both: the controller is single-threaded, and a
    thread would make pycriu's fork unsafe; Python runs the handler while pycriu waits)."""
    end = time.monotonic() + DEADLINE
    ticking = False

    def alarm(signum: int, frame: object) -> None:
        nonlocal ticking
        if time.monotonic() >= end:
            raise TimeoutError
        if tick is not None and not ticking:  # never re-entered: a tick may outlast the period,
            ticking = True  # and an outer tick would then tell an older figure after a newer one
            try:
                with contextlib.suppress(Exception):  # a progress line must never stop a save
                    tick()
            finally:
                ticking = False

    previous = signal.signal(signal.SIGALRM, alarm)
    every = every if tick is not None else DEADLINE
    signal.setitimer(signal.ITIMER_REAL, every, every)
    try:
        return call()
    except TimeoutError:
        swrk = getattr(getattr(client, "_comm", None), "swrk", None)
        if isinstance(swrk, int):
            with contextlib.suppress(OSError):
                os.kill(swrk, signal.SIGKILL)
        raise ForkpointError(f"CRIU did not finish {what} in {DEADLINE:.0f} s and was stopped.") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def written(images: str) -> int:
    """Bytes of memory dumped into ``images`` so far (its pages files)."""
    with os.scandir(images) as entries:
        return sum(e.stat().st_size for e in entries if e.name.startswith("pages-"))


WRITEBACK = 0.05  # seconds between writeback starts during a dump


class _Writeback:
    """Start writing the pages CRIU has dumped so far to disk while it dumps the rest, so the
    fsync that makes the session durable finds little left to write (the kernel would
    otherwise hold a 1 GB dump in the page cache until then: it writes back on its own only
    past a share of RAM). Calls ``tick`` every ``every`` seconds too."""

    def __init__(self, images: str, tick: Callable[[], None] | None, every: float) -> None:
        self.images, self.tick, self.every, self.told = images, tick, every, time.monotonic()
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

    def __call__(self) -> None:
        with os.scandir(self.images) as entries:
            for entry in entries:
                if entry.name.startswith("pages-"):
                    fd = os.open(entry.path, os.O_RDONLY)
                    try:
                        self.libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
                    finally:
                        os.close(fd)
        if self.tick is not None and time.monotonic() - self.told >= self.every:
            self.told = time.monotonic()
            self.tick()


_SYNC_FILE_RANGE_WRITE = 2


def dump(
    criu: Criu,
    pid: int,
    images: str,
    work: str,
    tick: Callable[[], None] | None = None,
    every: float = TICK,
) -> None:
    """Dump the process tree of ``pid`` (it ends when dumped); CRIU's log goes to ``work``.
    ``tick`` is called every ``every`` seconds while CRIU writes (see ``written``)."""
    client, fds = _client(criu, images, work, "dump.log")
    client.opts.pid = pid
    client.opts.leave_running = False
    try:
        writeback = _Writeback(images, tick, every)
        _within_deadline(client, client.dump, "saving", writeback, min(WRITEBACK, every))
    except ForkpointError:
        raise
    except Exception as exc:  # pycriu raises its own exception types for every failure
        raise ForkpointError(f"CRIU could not save the process: {_failure(work, 'dump.log', exc)}.") from None
    finally:
        for fd in fds:
            os.close(fd)


def restore(
    criu: Criu, images: str, work: str, lazy: bool = False
) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Restore a dumped tree as a child of this process; returns its root's pid, and with
    ``lazy`` the CRIU lazy-pages daemon that serves its memory (see ``_lazy_pages``)."""
    client, fds = _client(criu, images, work, "restore.log")
    client.opts.rst_sibling = True
    daemon = None
    before = _children()
    try:
        if lazy:
            daemon = _lazy_pages(criu, images, work)
            client.opts.lazy_pages = True
        return int(_within_deadline(client, client.restore, "restoring").pid), daemon
    except Exception as exc:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        _end(_children() - before)
        if isinstance(exc, ForkpointError):
            raise
        raise ForkpointError(
            f"CRIU could not restore the session: {_failure(work, 'restore.log', exc)}."
        ) from None
    finally:
        for fd in fds:
            os.close(fd)


def _children() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children()}


def _end(pids: set[int]) -> None:
    """A failed restore can leave half-restored tasks behind as our children (with
    ``rst_sibling`` the restored root is our child); end them, and with them their PID
    namespace. Seen when the lazy-pages daemon failed after CRIU had restored the tasks
    ("Failed sending restore finished indication")."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _lazy_pages(criu: Criu, images: str, work: str) -> subprocess.Popen[bytes]:
    """Start CRIU's lazy-pages daemon for a restore: the process comes back without its
    memory, and each page is filled from the images by userfaultfd when first touched; the
    daemon copies the rest in the background and exits when all is in place."""
    daemon = subprocess.Popen(
        [criu.path, "lazy-pages", "-D", images, "-W", work, "-o", "lazy-pages.log", "-v2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = os.path.join(work, "lazy-pages.socket")
    deadline = time.monotonic() + 10
    while not os.path.exists(ready):
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            daemon.wait()
            raise ForkpointError(
                "CRIU's lazy-pages daemon did not start (forkpoint doctor says whether userfaultfd works)."
            )
        time.sleep(0.002)
    return daemon
