"""Checkpoint, rewind and memory figures for a head holding 100 MB, 1 GB and 4 GB.

Run: ``make bench`` (or ``.venv/bin/python bench/checkpoint.py [--sizes 100M,1G] [--repeat N]``).

* checkpoint latency: how long user code is paused by ``forkpoint.checkpoint()``, measured
  inside the head, next to a bare ``os.fork()`` (child ``_exit``s at once) of the same
  process, interleaved in the same run; medians and the ratio.
* rewind latency: ``Controller.rewind(id)`` from call to new head ready, in the controller,
  against a bare fork of the head until its child runs its first line (``fork,up``: the
  child writes the time to a pipe), the floor of any rewind, and against fork+exit.
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
import forkpoint, os, struct, time
_r, _w = os.pipe()
_ur, _uw = os.pipe()
def _up():
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.write(_uw, struct.pack("d", time.perf_counter()))
        os._exit(0)
    took = struct.unpack("d", os.read(_ur, 8))[0] - t0
    os.waitpid(pid, 0)
    return took
def _bare(keep):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        if keep:
            os.read(_r, 1)  # parked like a checkpoint, sharing every page
        os._exit(0)
    took = time.perf_counter() - t0
    if not keep:
        os.waitpid(pid, 0)
    return took, pid
_exit, _kept, _pids, _cp, _upt = [], [], [], [], []
for _ in range({repeat}):  # interleaved: each sees the same processes sharing the pages
    _exit.append(_bare(False)[0])
    time.sleep(0.01)
    took, pid = _bare(True)
    _kept.append(took)
    _pids.append(pid)
    time.sleep(0.01)
    t0 = time.perf_counter()
    forkpoint.checkpoint()
    _cp.append(time.perf_counter() - t0)
    time.sleep(0.01)
    _upt.append(_up())
    time.sleep(0.01)
os.write(_w, b"x" * {repeat})
for pid in _pids:
    os.waitpid(pid, 0)
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


def latency(kind: str, size: int, repeat: int) -> dict[str, float]:
    null = os.open(os.devnull, os.O_RDWR)
    with Controller(stdio=(null, null, null), max_checkpoints=10_000, memory_budget=1 << 50) as c:
        t0 = time.perf_counter()
        ok(c, SETUP[kind].format(size=size))
        out = {"build": time.perf_counter() - t0}
        ok(c, LATENCY.format(repeat=repeat))
        for name in ("cp", "exit", "kept", "upt"):
            out[name] = statistics.median(values(c, f"_{name}"))
        base = ok(c, "pass")
        rewinds = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            c.rewind(base)
            rewinds.append(time.perf_counter() - t0)
        out["rewind"] = statistics.median(rewinds)
        head = measure(c.head_pid or 0)
        out["rss"] = head.rss if head else 0
    os.close(null)
    return out


def held(kind: str, size: int, dirty: int) -> tuple[int, int]:
    """USS and page tables of the one checkpoint that shares the state, after the head
    dirties ``dirty`` bytes of it (a fresh controller, so no other checkpoint shares)."""
    null = os.open(os.devnull, os.O_RDWR)
    with Controller(stdio=(null, null, null), max_checkpoints=10_000, memory_budget=1 << 50) as c:
        setup = ok(c, SETUP[kind].format(size=size))
        ok(c, DIRTY[kind].format(n=dirty))
        mem = measure(c.view()[setup].pid)
        assert mem is not None
    os.close(null)
    return mem.uss, mem.page_tables


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
        f"{'kind':7} {'size':>5} {'head':>8} | {'checkpoint':>9} {'fork+exit':>9} {'ratio':>5} "
        f"{'fork,kept':>9} {'ratio':>5} | {'rewind':>8} {'fork,up':>9} {'ratio':>5} {'/exit':>5} | "
        f"{'held after 10 MB':>22} | {'held after 100 MB':>22}"
    )
    print(header)
    print("-" * len(header))
    for kind in args.kinds.split(","):
        for text in args.sizes.split(","):
            size = parse_size(text)
            if kind == "objects" and size > 1 << 30:
                continue  # building 4 GB of small objects takes minutes; 1 GB shows the trend
            r = latency(kind, size, args.repeat)
            cells = []
            for n in (10 * MB, 100 * MB):
                uss, pte = held(kind, size, n)
                cells.append(f"{uss / MB:6.1f} MB {uss / n:4.2f}x +{pte / MB:4.1f} PT")
            print(
                f"{kind:7} {text:>5} {r['rss'] / MB:5.0f} MB | {ms(r['cp'])} {ms(r['exit'])} "
                f"{r['cp'] / r['exit']:5.2f} {ms(r['kept'])} {r['cp'] / r['kept']:5.2f} | "
                f"{ms(r['rewind'])} {ms(r['upt'])} {r['rewind'] / r['upt']:5.2f} "
                f"{r['rewind'] / r['exit']:5.2f} | "
                f"{cells[0]:>22} | {cells[1]:>22}",
                flush=True,
            )


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:6.2f} ms"


if __name__ == "__main__":
    main()
