"""The head's copy-on-write cost: writing right after a checkpoint, next to the same write
with no checkpoint, in the same process and run.

Run: ``.venv/bin/python bench/cow.py`` (part of ``make bench``). After a checkpoint every page
the head writes for the first time is copied (the checkpoint keeps the original); this is the
price of a checkpoint that the user pays later, spread over the code that runs after it.
"""

from __future__ import annotations

import os
import statistics

from forkpoint.controller import Controller

MB = 1 << 20
CODE = """
import forkpoint, time, numpy as np
state = np.ones({size} // 8)  # what the head holds
_plain, _after = [], []
n = {n} // 8
for i in range({repeat}):
    fresh = np.ones(2 * n)  # allocated since the last checkpoint: private, every page present
    t0 = time.perf_counter(); fresh[:n] += 1; _plain.append(time.perf_counter() - t0)
    forkpoint.checkpoint()  # now the checkpoint shares every page of fresh
    t0 = time.perf_counter(); fresh[n:] += 1; _after.append(time.perf_counter() - t0)
    del fresh
"""


def main() -> None:
    size, repeat = 1 << 30, 5
    print(
        f"{'write':>7} | {'no checkpoint':>13} | {'after one':>10} | ratio   (head holding {size // MB} MB)"
    )
    for n in (10 * MB, 100 * MB):
        null = os.open(os.devnull, os.O_RDWR)
        with Controller(stdio=(null, null, null), memory_budget=1 << 50) as c:
            result = c.execute(CODE.format(size=size, n=n, repeat=repeat))
            if result.status != "ok":
                raise SystemExit(result.traceback)
            plain = statistics.median(float(x) for x in c.evaluate("_plain")[1].strip("[]").split(","))
            after = statistics.median(float(x) for x in c.evaluate("_after")[1].strip("[]").split(","))
        os.close(null)
        print(f"{n // MB:4d} MB | {plain * 1e3:10.2f} ms | {after * 1e3:7.2f} ms | {after / plain:5.1f}x")


if __name__ == "__main__":
    main()
