"""The ``random`` state at the moment of the last fork, read in the child.

CPython reseeds ``random`` in every forked child (an after-fork hook that ``random``
registers on import), so a checkpoint must keep the state it was taken with. After-fork
hooks run in the order they were registered: this module, imported before anything else of
the agent, registers one that reads the state in the child before ``random`` reseeds it. The
head's pause at a checkpoint then does not include it (every page it would write there is a
copy-on-write fault). If something imported ``random`` before the agent, ``in_child`` is
False and the head reads the state before the fork instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any

in_child = "random" not in sys.modules
at_fork: Any = None
enabled = True  # off in parked checkpoints: their forks (new heads, probes) need no state


def state() -> Any:
    """``random``'s state now, or None when it was never imported."""
    module = sys.modules.get("random")
    return module.getstate() if module is not None else None


def _keep() -> None:
    global at_fork
    if enabled:
        at_fork = state()


if in_child:
    os.register_at_fork(after_in_child=_keep)
