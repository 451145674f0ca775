"""When a site takes a checkpoint: what a checkpoint costs, weighed against the work since.

A checkpoint pauses the script for a fork (3 ms at 1 GiB); a site that runs far more often
than that would spend the run forking. So the pause of the last checkpoint is kept, and a site
reached sooner after the last checkpoint than a factor of that pause takes none: ``LIGHT`` for
a top-level statement between definitions and for pytest's tests, ``SPACING`` for the hits of
a site inside a function after its first, unless ``every_hit``. A checkpoint costs the script
about twice its pause (the copy-on-write faults after it, the new process starting on the other
core: bench/hot_site.py), so 39 pauses between two keep checkpoints near 5% of the run.

A resume goes on from the nearest checkpoint taken; what ran since runs again. The hits
skipped are counted and told with the next checkpoint.

Imported by the agent: standard library only.
"""

from __future__ import annotations

import time

__all__ = ["LIGHT", "SPACING", "hit_due", "soon", "taken"]

LIGHT = 20.0
SPACING = 39.0
every_hit = False  # a checkpoint at every hit of a site in a function (``--checkpoint-every-hit``)
skipped = 0  # hits of sites in functions that took no checkpoint since the last checkpoint
_end = 0.0  # perf_counter() when the last checkpoint (or a light statement) was done
_pause = 0.0  # how long the last checkpoint paused the script
_hit: set[tuple[str, int | None]] = set()  # sites (function, line; None: its entry) hit once


def soon(factor: float, restart: bool = False) -> bool:
    """Whether less than ``factor`` times the last pause has passed since the last checkpoint;
    with ``restart``, a skipped statement restarts the clock (only its own time counts)."""
    global _end
    now = time.perf_counter()
    early = now - _end < factor * _pause
    if early and restart:
        _end = now
    return early


def hit_due(site: tuple[str, int | None]) -> bool:
    """Whether this hit of a site inside a function takes a checkpoint (else it is counted)."""
    global skipped
    if every_hit or site not in _hit or not soon(SPACING):
        _hit.add(site)
        return True
    skipped += 1
    return False


def taken(start: float, paused: bool) -> None:
    """A checkpoint begun at ``start`` is done; ``paused``: in the process that went on from
    it (in a head rewound there, the time since ``start`` is the time it was parked)."""
    global _end, _pause, skipped
    _end = time.perf_counter()
    skipped = 0
    if paused:
        _pause = _end - start
