"""Instrumentation overhead of ``forkpoint run`` on a CPU-bound pure-Python script, next to plain
``python`` in the same run.

Run: ``.venv/bin/python bench/run_overhead.py`` (part of ``make bench``). The script has a few
top-level statements (each followed by a checkpoint) and does its work in functions that are
called millions of times: after its first call a function runs unmarked code, so the overhead is
start-up plus one fork per top-level statement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """
def collatz(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps

def longest(limit):
    return max(range(1, limit), key=collatz)

import sys
limit = int(sys.argv[1])
best = longest(limit)
total = sum(collatz(n) for n in range(1, limit // 4))
print(best, total)
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds the whole command takes, from exec to exit."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    forkpoint = str(Path(sys.executable).with_name("forkpoint"))
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "cpu.py")
        Path(script).write_text(SCRIPT)
        for limit in ("300000", "1000000"):
            plain = min(timed([sys.executable, script, limit]) for _ in range(3))
            under = min(timed([forkpoint, "run", script, "--", limit]) for _ in range(3))
            ratio = under / plain
            print(f"limit {limit:>8}: python {plain:5.2f} s | forkpoint run {under:5.2f} s | {ratio:5.3f}x")


if __name__ == "__main__":
    main()
