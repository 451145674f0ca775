"""A checkpoint site in a hot loop: what it costs, with the hits spaced out (the default) and
with ``--checkpoint-every-hit``, next to python in the same run.

The script holds a 1 GiB numpy array (so that a fork costs what it costs a real head) and calls
a function 1,000 times with some work in each call; the site is a line inside it. The loop
times itself, so start-up is left out; the checkpoints taken are counted in the tree. Issue
12's bar: the spaced loop takes at most 1.1x python's plus what its checkpoints cost, each at
what one costs in the every-hit run (its loop time over python's, per checkpoint), since in this
VM a fork whose child stays costs far more than a bare fork once many are kept.

    python bench/hot_site.py [--size 1G] [--works 0,0.0001,0.001] [--calls 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forkpoint.controller import Controller

SCRIPT = """\
import time
import numpy as np

big = np.ones({size} // 8)

def step(i, work):
    x = i * 2
    end = time.perf_counter() + work
    while time.perf_counter() < end:
        pass
    return x

start = time.perf_counter()
total = 0
for i in range({calls}):
    total += step(i, {work})
print("LOOP", time.perf_counter() - start)
"""
SITE = 7  # the line `x = i * 2`


def loop_time(text: str) -> float:
    return float(re.findall(r"LOOP ([\d.e-]+)", text)[-1])


def under_forkpoint(script: Path, every_hit: bool) -> tuple[float, int]:
    """(loop seconds, checkpoints taken in step())."""
    out = script.with_suffix(".out")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with Controller(stdio=(fd, fd, fd), max_checkpoints=2000) as c:
            result = c.run_script(str(script), [], lines=(SITE,), every_hit=every_hit)
            assert result.status.value == "exit", result
            taken = [n for n in c.view().nodes.values() if n.entry == "step"]
    finally:
        os.close(fd)
    return loop_time(out.read_text()), len(taken)


def fork_pause(size: int) -> float:
    """A bare fork whose child stays, of a python process holding ``size`` bytes, in seconds."""
    code = (
        "import numpy as np, os, time, statistics\n"
        f"big = np.ones({size} // 8)\n"
        "ts = []\n"
        "for _ in range(9):\n"
        "    a = time.perf_counter(); p = os.fork()\n"
        "    if p == 0: time.sleep(2); os._exit(0)\n"
        "    ts.append(time.perf_counter() - a)\n"
        "print(statistics.median(ts))\n"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--works", default="0,0.0001,0.001")
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    units = {"M": 2**20, "G": 2**30}
    size = int(float(args.size[:-1]) * units[args.size[-1]])
    fork = fork_pause(size)
    print(f"head {args.size}, {args.calls} calls; a bare fork whose child stays: {fork * 1000:.2f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        for work in (float(w) for w in args.works.split(",")):
            script = Path(tmp, "hot.py")
            script.write_text(SCRIPT.format(size=size, calls=args.calls, work=work))
            started = time.perf_counter()
            plain = loop_time(
                subprocess.run([sys.executable, str(script)], capture_output=True, text=True).stdout
            )
            python_total = time.perf_counter() - started
            spaced, taken = under_forkpoint(script, every_hit=False)
            every, every_taken = under_forkpoint(script, every_hit=True)
            each = (every - plain) / max(every_taken, 1)
            bar = 1.1 * plain + taken * each
            share = (spaced - plain) / spaced
            print(
                f"work {work * 1000:5.2f} ms/call: python loop {plain:7.3f} s (run {python_total:.2f} s) | "
                f"spaced {spaced:7.3f} s, {taken} checkpoints ({share:.0%} of it; bar 1.1x + theirs "
                f"= {bar:.3f} s: {'met' if spaced <= bar else 'MISSED'}) | every hit {every:7.3f} s, "
                f"{every_taken} checkpoints, {each * 1000:.1f} ms each",
                flush=True,
            )


if __name__ == "__main__":
    main()
