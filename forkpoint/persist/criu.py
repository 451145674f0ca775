"""Finding CRIU and saying what it can do on this machine.

``make install`` puts a CRIU 4.x next to the venv's python (``tools/get_criu.py``); a
``FORKPOINT_CRIU`` environment variable or a ``criu`` on PATH are used otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from forkpoint.errors import ForkpointError

__all__ = ["Criu", "find_criu"]

MIN_VERSION = (4, 0)


@dataclass(frozen=True)
class Criu:
    path: str
    version: tuple[int, int]

    def check(self) -> tuple[bool, str]:
        """``criu check``: whether dump and restore can work here, and CRIU's last word."""
        done = subprocess.run([self.path, "check"], capture_output=True, text=True, timeout=60)
        text = (done.stdout + done.stderr).strip().splitlines()
        return done.returncode == 0, text[-1] if text else f"exit status {done.returncode}"

    def lazy_pages(self) -> tuple[bool, str]:
        done = subprocess.run(
            [self.path, "check", "--feature", "uffd-noncoop"], capture_output=True, text=True, timeout=60
        )
        text = (done.stdout + done.stderr).strip().splitlines()
        return done.returncode == 0, text[-1] if text else ""


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
