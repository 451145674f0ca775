"""Where an empty notebook cell's time goes, in process: ``Controller.execute("pass")`` with
the kernel's IPython head and with a plain head, after N inputs; and IPython's ``run_cell``
right after a fork (its child stays) against the same with no fork, with the pages it faults.

Run: ``.venv/bin/python bench/cell_cost.py [--inputs 10,200,600] [--samples 30]``. Issue 14's
kernel bench (bench/kernel.py) times the whole round trip; this one says what the engine and
copy-on-write take of it, and whether that grows with the inputs run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from forkpoint.controller import Controller, Output
from forkpoint.kernel.kernel import HEAD_SETUP

RUN_CELL = """
import os, statistics, sys, time
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
for _ in range(30):
    shell.run_cell("pass", store_history=True)
def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
for fork in (False, True, False, True):
    took, faulted, kids = [], [], []
    for _ in range(30):
        if fork:
            pid = os.fork()
            if pid == 0:
                time.sleep(600)
                os._exit(0)
            kids.append(pid)
        before, t0 = faults(), time.perf_counter()
        shell.run_cell("pass", store_history=True)
        took.append(time.perf_counter() - t0)
        faulted.append(faults() - before)
    for pid in kids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    print(f"run_cell {'after a fork' if fork else 'no fork':>12}: "
          f"{statistics.median(took) * 1e3:5.2f} ms, {statistics.median(faulted):4.0f} page faults")
"""


def engine(ipython: bool, points: list[int], samples: int) -> list[float]:
    if ipython:
        os.environ["FORKPOINT_HEAD_SETUP"] = HEAD_SETUP
    else:
        os.environ.pop("FORKPOINT_HEAD_SETUP", None)
    out = []
    with Controller(output=Output.PIPES, on_event=lambda event: None, on_input=lambda *a: "") as c:
        done = 0
        for n in points:
            while done < n:
                c.execute("pass")
                done += 1
            took = []
            for _ in range(samples):
                t0 = time.perf_counter()
                c.execute("pass")
                took.append(time.perf_counter() - t0)
            done += samples
            out.append(statistics.median(took))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", default="10,200,600")
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    points = [int(n) for n in args.inputs.split(",")]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; medians of {args.samples}")
    print("Controller.execute('pass') after N inputs: " + ", ".join(f"N={n}" for n in points))
    for ipython in (True, False, True, False):
        figures = engine(ipython, points, args.samples)
        shown = "  ".join(f"{f * 1e3:5.2f} ms" for f in figures)
        print(f"  {'IPython head' if ipython else 'plain head':>12}: {shown}")
    subprocess.run([sys.executable, "-c", RUN_CELL], check=True)


if __name__ == "__main__":
    main()
