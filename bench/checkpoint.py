"""Checkpoint, rewind and memory figures for a head holding 100 MB, 1 GB and 4 GB.

Run: ``make bench`` (or ``.venv/bin/python bench/checkpoint.py [--sizes 100M,1G] [--repeat N]``).

* checkpoint latency: how long user code is paused by ``forkpoint.checkpoint()``, measured
  inside the head, next to a bare ``os.fork()`` (child ``_exit``s at once) of the same
  process, interleaved in the same run; medians and the ratio.
* rewind latency: ``Controller.rewind(id)`` from call to new head ready, in the controller.
* memory held: after the head dirties 10 MB and 100 MB, the USS of the checkpoint taken just
  before (what freeing it would give back), its page tables (VmPTE, not in USS), and the ratio
  to the bytes dirtied.

Two kinds of state: ``numpy`` (one big array; numpy asks for transparent huge pages) and
``objects`` (many small Python objects on 4 KiB pages). Nothing here asserts a time: it
prints figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from forkpoint.cli import parse_size
from forkpoint.controller import Controller
from forkpoint.controller.memory import measure

MB = 1 << 20

SETUP = {
    "numpy": "import numpy as np\nstate = np.ones({size} // 8)\n",
    # ~100 bytes per element as a list of distinct floats in tuples
    "objects": "state = [(float(i), i) for i in range({size} // 100)]\n",
}
DIRTY = {
    "numpy": "state[: {n} // 8] += 1\n",
    "objects": "state[: {n} // 100] = [(float(-i), -i) for i in range({n} // 100)]\n",
}
LATENCY = """
import forkpoint, os, time
_cp, _fork = [], []
for _ in range({repeat}):
    t0 = time.perf_counter(); forkpoint.checkpoint(); _cp.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); pid = os.fork()
    if pid == 0:
        os._exit(0)
    _fork.append(time.perf_counter() - t0); os.waitpid(pid, 0)
"""


def ok(c: Controller, code: str) -> int:
    result = c.execute(code)
    if result.status != "ok" or result.checkpoint is None:
        raise SystemExit(f"bench input failed: {result}")
    return result.checkpoint


def values(c: Controller, expr: str) -> list[float]:
    good, text = c.evaluate(expr)
    if not good:
        raise SystemExit(text)
    return [float(x) for x in text.strip("[]").split(",") if x.strip()]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.2f} ms"


def run(kind: str, size: int, repeat: int) -> dict[str, float]:
    null = os.open(os.devnull, os.O_RDWR)
    with Controller(stdio=(null, null, null), max_checkpoints=10_000, memory_budget=1 << 50) as c:
        t0 = time.perf_counter()
        ok(c, SETUP[kind].format(size=size))
        build = time.perf_counter() - t0
        ok(c, LATENCY.format(repeat=repeat))
        cp = statistics.median(values(c, "_cp"))
        fork = statistics.median(values(c, "_fork"))
        base = ok(c, "pass")
        rewinds = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            c.rewind(base)
            rewinds.append(time.perf_counter() - t0)
        rewind = statistics.median(rewinds)
        out = {"build": build, "checkpoint": cp, "fork": fork, "rewind": rewind}
        for n in (10 * MB, 100 * MB):
            if n > size:
                continue
            c.rewind(base)
            before = c.tree[c.current]
            ok(c, DIRTY[kind].format(n=n))
            held = measure(before.pid)
            assert held is not None
            out[f"held{n // MB}"] = held.uss
            out[f"pte{n // MB}"] = held.page_tables
        head = measure(c.head_pid or 0)
        out["rss"] = head.rss if head else 0
    os.close(null)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100M,1G,4G")
    parser.add_argument("--kinds", default="numpy,objects")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, THP: ", end="")
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        print(f.read().strip())
    header = (
        f"{'kind':8} {'size':>6} {'head rss':>9} | {'checkpoint':>10} {'bare fork':>10} {'ratio':>6} | "
        f"{'rewind':>10} | {'held after 10 MB':>18} {'ratio':>6} | {'held after 100 MB':>18} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for kind in args.kinds.split(","):
        for text in args.sizes.split(","):
            size = parse_size(text)
            if kind == "objects" and size > 1 << 30:
                continue  # building 4 GB of small objects takes minutes; 1 GB shows the trend
            r = run(kind, size, args.repeat)
            cells = []
            for n in (10, 100):
                if f"held{n}" in r:
                    held = r[f"held{n}"]
                    cells.append(f"{held / MB:8.1f} MB +{r[f'pte{n}'] / MB:4.1f} PT {held / (n * MB):6.2f}")
                else:
                    cells.append(f"{'-':>18} {'-':>6}")
            print(
                f"{kind:8} {text:>6} {r['rss'] / MB:6.0f} MB | {ms(r['checkpoint']):>10} {ms(r['fork']):>10} "
                f"{r['checkpoint'] / r['fork']:6.2f} | {ms(r['rewind']):>10} | {cells[0]} | {cells[1]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
