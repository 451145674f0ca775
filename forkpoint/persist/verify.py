"""``python -m forkpoint.persist.verify``: the content check of a lazily restored session's
pages files, in a process of its own behind the restore.

A lazy restore is ready before its memory is read; hashing a GiB of pages first would make it
wait 0.25 s or more for a check, so the controller starts this process instead and waits for
it only before the restored process is first used (an input, a rewind, a save). A process, not
a thread: the controller forks CRIU through pycriu, which threads make unsafe.

Reads ``[[path, hash], ...]`` (JSON) on stdin; writes ``{"bad": path or null}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from forkpoint.persist.store import content_hash


def main() -> None:
    files = json.load(sys.stdin)
    bad = next((path for path, digest in files if content_hash(Path(path)) != digest), None)
    json.dump({"bad": bad}, sys.stdout)


if __name__ == "__main__":
    main()
