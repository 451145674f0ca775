"""Where an internal error's details go: a file the user can attach to a report, so that the
terminal gets one sentence and a live shell goes on (its checkpoints are still there).

``$XDG_STATE_HOME/forkpoint/errors.log``, 0600, appended to; cut to its last half when it passes
1 MB, so a loop of failures cannot fill the disk.
"""

from __future__ import annotations

import os
import time
import traceback

from forkpoint import __version__, paths
from forkpoint.channel import private_dir

__all__ = ["record"]

_LIMIT = 1 << 20


def record(exc: BaseException, doing: str) -> str | None:
    """Append ``exc``'s traceback, saying what was being done; the log's path, or None when
    it could not be written."""
    try:
        path = os.path.join(private_dir(paths.state_dir()), "errors.log")
        text = (
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} forkpoint {__version__}, pid {os.getpid()}, "
            f"while {doing}\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a") as log:
            log.write(text)
            size = log.tell()
        if size > _LIMIT:
            with open(path, "rb") as fp:
                fp.seek(size - _LIMIT // 2)
                kept = fp.read()
            with open(path, "wb") as fp:
                fp.write(kept)
        return path
    except OSError:
        return None
