"""Where forkpoint keeps things, per the XDG base directory spec.

* runtime (sockets): ``$XDG_RUNTIME_DIR/forkpoint``, else (or when that path is too long for
  a Unix socket's) a private dir under the temp dir named for the uid; each controller makes
  its own 0700 subdir there.
* state (shell history): ``$XDG_STATE_HOME/forkpoint``, else ``~/.local/state/forkpoint``.
* data (saved sessions): ``$XDG_DATA_HOME/forkpoint``, else ``~/.local/share/forkpoint``.
* cache (compiled, rewritten scripts): ``$XDG_CACHE_HOME/forkpoint``, else ``~/.cache/forkpoint``.
"""

from __future__ import annotations

import os

__all__ = ["attach_file", "cache_dir", "data_dir", "runtime_root", "short_temp_dir", "state_dir"]


def _xdg(var: str, fallback: str) -> str:
    value = os.environ.get(var, "")
    # The spec says relative paths are invalid and must be ignored.
    base = value if os.path.isabs(value) else os.path.expanduser(fallback)
    return os.path.join(base, "forkpoint")


# A Unix socket's path holds at most 107 bytes. Below the root come a controller's dir
# (PID-random, 16) and its longest socket (lazy-pages.socket, 17), with their slashes.
_ROOT_MAX = 107 - 1 - 16 - 1 - 17


def runtime_root() -> str:
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    root = os.path.join(value, "forkpoint")
    if os.path.isabs(value) and os.path.isdir(value) and _fits(root):
        return root
    return os.path.join(short_temp_dir(), f"forkpoint-{os.getuid()}")


def attach_file(secret: str, uid: int) -> str:
    """Where a restored process finds its new controller's address. The path is baked into
    the saved process, so it must be the same on every machine and for every store and session
    name: /tmp (not $TMPDIR or $XDG_RUNTIME_DIR, which differ between nodes), named for the
    uid the process runs as and for its session's secret, never for where it is stored."""
    import hashlib

    return f"/tmp/forkpoint-{uid}/attach/{hashlib.sha256(secret.encode()).hexdigest()[:32]}.json"


def short_temp_dir() -> str:
    """The temp dir, or /tmp when its path leaves no room for a socket's below it."""
    import tempfile  # only here: the head imports this module, and tempfile costs it 11 ms

    temp = tempfile.gettempdir()
    return temp if _fits(os.path.join(temp, "forkpoint-4294967295-abcdefgh")) else "/tmp"


def _fits(root: str) -> bool:
    return len(os.fsencode(root)) <= _ROOT_MAX


def state_dir() -> str:
    return _xdg("XDG_STATE_HOME", "~/.local/state")


def data_dir() -> str:
    return _xdg("XDG_DATA_HOME", "~/.local/share")


def cache_dir() -> str:
    return _xdg("XDG_CACHE_HOME", "~/.cache")
