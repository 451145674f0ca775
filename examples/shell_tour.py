"""`make demo`: a scripted tour of `forkpoint shell` in a real terminal.

It types into the shell the way a user would (through a pseudo-terminal) and shows the
screen as it goes: an 800 MB array, a change rewound in milliseconds, an impure input that
fails half-way and is rolled back, the checkpoint list and tree, a diff, and a crash of
the Python process that the shell survives.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from pathlib import Path

import pexpect

from forkpoint.controller.supervisor import with_environ

PROMPT = re.compile(r"\[(\d+)\]>>>\x1b\[")
STEPS = [
    ("import numpy as np", "every input that succeeds becomes a checkpoint"),
    ("a = np.arange(10**8)          # 800 MB", None),
    ("x = 0", None),
    ("x += 1; a[:] = 0", "an impure change to a big array"),
    (":rewind 3", "rewinding forks checkpoint 3 again: no re-computation"),
    ("x, int(a[5])", None),
    ("x += 1; print(y)", "this input fails half-way..."),
    ("x", "...and was rolled back: x += 1 did not happen"),
    (":checkpoints", None),
    (":tree", None),
    (":diff 3 4", "what the rewound input had changed"),
    ("import ctypes; ctypes.string_at(0)", "a segfault in C code kills the Python process..."),
    ("x, a.size", "...the shell survives and rewinds to the last checkpoint"),
    (":quit", None),
]


def main() -> int:
    exe = str(Path(sys.executable).with_name("forkpoint"))
    marker = uuid.uuid4().hex
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", FORKPOINT_TOUR=marker)
    if not sys.stdout.isatty():
        env["NO_COLOR"] = "1"
    child = pexpect.spawn(exe, ["shell"], env=env, encoding="utf-8", dimensions=(40, 120), timeout=60)
    child.logfile_read = sys.stdout
    child.delaybeforesend = None
    started = time.monotonic()
    child.expect(PROMPT)
    for line, note in STEPS:
        if note:
            sys.stdout.write(
                f"\n\x1b[2m    # {note}\x1b[0m\n" if sys.stdout.isatty() else f"\n    # {note}\n"
            )
        time.sleep(0.3)
        t0 = time.monotonic()
        child.send(line + "\r")
        if line == ":quit":
            child.expect(pexpect.EOF)
            break
        child.expect(PROMPT)
        if line.startswith(":rewind"):
            sys.stdout.write(f"  ({(time.monotonic() - t0) * 1e3:.0f} ms from Enter to the next prompt)\n")
    child.close()
    time.sleep(0.5)
    left = with_environ("FORKPOINT_TOUR", marker)
    took = time.monotonic() - started
    print(f"\ntour finished in {took:.1f} s; forkpoint processes left running: {left or 'none'}")
    return 0 if child.exitstatus == 0 and not left else 1


if __name__ == "__main__":
    sys.exit(main())
