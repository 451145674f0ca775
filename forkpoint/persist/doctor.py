"""``forkpoint doctor``: what works on this machine, and why not where it does not.

Each finding is measured, not assumed: a fork is taken, ``criu check`` is run, the
capabilities are read from /proc, a PID namespace is created in a child.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

from forkpoint.errors import ForkpointError
from forkpoint.persist.criu import find_criu, privileges
from forkpoint.persist.store import sessions_dir

__all__ = ["Finding", "examine"]


@dataclass(frozen=True)
class Finding:
    what: str
    ok: bool
    detail: str
    needed: bool = True  # False: nice to have (lazy restore)


def examine() -> list[Finding]:
    found = [_fork()]
    found += _criu()
    found.append(_privileges())
    found.append(_pid_namespaces())
    found.append(_store())
    return found


# Probes run in a child interpreter: only the agent's snapshot module forks forkpoint's processes.
_FORK = """
import os
pid = os.fork()
if pid == 0:
    os._exit(7)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
_PIDNS = """
import ctypes, os
if ctypes.CDLL(None, use_errno=True).unshare(0x20000000) != 0:
    raise SystemExit(1)
inner = os.fork()
if inner == 0:
    os._exit(0 if os.getpid() == 1 else 2)
raise SystemExit(os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1]))
"""


def _probe(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def _fork() -> Finding:
    ok = _probe(_FORK).stdout.strip() == "7"
    return Finding("fork checkpoints", ok, "fork() works" if ok else "a forked child did not run")


def _criu() -> list[Finding]:
    try:
        criu = find_criu()
    except ForkpointError as exc:
        return [Finding("CRIU", False, str(exc))]
    version = ".".join(map(str, criu.version))
    found = [Finding("CRIU", True, f"{version} at {criu.path}")]
    try:
        ok, said = criu.check()
        found.append(Finding("criu check", ok, said))
        lazy, said = criu.lazy_pages()
        found.append(Finding("userfaultfd (lazy restore)", lazy, said or "works", needed=False))
    except (OSError, subprocess.TimeoutExpired) as exc:
        found.append(Finding("criu check", False, f"could not run: {exc}"))
    try:
        import pycriu  # type: ignore[import-untyped]  # noqa: F401

        found.append(Finding("pycriu", True, "imports"))
    except ImportError as exc:
        found.append(Finding("pycriu", False, f"does not import ({exc}); make install provides it"))
    return found


def _privileges() -> Finding:
    ok, what = privileges()
    return Finding("privileges", ok, what if ok else f"{what}: CRIU cannot dump or restore")


def _pid_namespaces() -> Finding:
    """A saved process is dumped as PID 1 of its own PID namespace, so that a restore does
    not need its old PID free: check that a child can make one."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = f.read().strip()
    ok = _probe(_PIDNS).returncode == 0
    detail = f"pid_max {pid_max}; " + (
        "PID namespaces work, so a restore does not need its old PID free"
        if ok
        else "no PID namespaces: a restore fails while another process holds the saved PID"
    )
    return Finding("PID conflicts", ok, detail, needed=False)


def _store() -> Finding:
    folder = sessions_dir()
    free = shutil.disk_usage(folder).free
    return Finding("session store", True, f"{folder} ({free / 1e9:.1f} GB free)")


def main_report() -> tuple[list[str], bool]:
    """Lines for the terminal, and whether everything needed works."""
    findings = examine()
    width = max(len(f.what) for f in findings)
    lines = [f"{'ok  ' if f.ok else 'NO  '}{f.what.ljust(width)}  {f.detail}" for f in findings]
    lines.append(f"Python {sys.version.split()[0]} at {sys.executable}")
    return lines, all(f.ok for f in findings if f.needed)
