"""forkpoint: rewind a live Python process to any checkpoint, edit the code, continue.

The public API is what user code may call; it imports nothing heavy and is a no-op when
the process is not run by forkpoint.
"""

from __future__ import annotations

import sys

__all__ = ["__version__", "checkpoint"]

__version__ = "0.1.0"


def checkpoint(label: str | None = None) -> None:
    """Take a checkpoint here (labelled, if given); a rewind to it continues from this line.

    Outside forkpoint this does nothing, so scripts can keep the call.
    """
    snapshot = sys.modules.get("forkpoint.agent.snapshot")
    if snapshot is not None and snapshot.active():
        snapshot.take(label=label, at_rest=False)
