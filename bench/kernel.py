"""Per-cell round trip through jupyter_client: the forkpoint kernel against ipykernel, in one run.

For each kernel and head size (an empty state, a 1 GiB numpy array), the round trip of a
trivial cell (``pass``, sent by a BlockingKernelClient until its reply and the kernel's idle
status) is timed after 10 and after 200 cells (the median of ``--samples`` cells each), with
kernels of both kinds alternating. Issue 14's bar: at most ipykernel's plus 2x a bare fork of
that process, flat in the number of cells. Also the rewind latency (``%rewind -1`` sent until
its reply), and a bare fork of the forkpoint kernel's head, timed in the head.

    python bench/kernel.py [--sizes 0,1G] [--cells 10,200] [--samples 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

from forkpoint.cli import parse_size

FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))
FORK = """
import os, time
def _fork_ms():
    out = []
    for _ in range(9):
        t0 = time.perf_counter(); pid = os.fork()
        if pid == 0:
            os._exit(0)
        out.append(time.perf_counter() - t0); os.waitpid(pid, 0)
    out.sort()
    return round(out[4] * 1e3, 2)
"""


def round_trip(kc, code: str) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
    took = time.perf_counter() - t0
    if reply["content"]["status"] != "ok":
        raise SystemExit(f"bench cell failed: {code!r}: {reply['content']}")
    return took


def value(kc, expr: str) -> str:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def hook(msg):  # type: ignore[no-untyped-def]
        if msg["msg_type"] == "execute_result":
            seen.append(msg["content"]["data"]["text/plain"])

    kc.execute_interactive(expr, timeout=60, output_hook=hook)
    return seen[-1] if seen else ""


def one(kernel: str, size: int, cells: list[int], samples: int) -> dict[str, float]:
    km = KernelManager(kernel_name=kernel)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    out: dict[str, float] = {}
    try:
        kc.wait_for_ready(timeout=120)
        if size:
            round_trip(kc, f"import numpy as np\nstate = np.ones({size} // 8)")
        done = 1 if size else 0
        for n in cells:
            while done < n - samples:
                round_trip(kc, "pass")
                done += 1
            out[f"cell@{n}"] = statistics.median(round_trip(kc, "pass") for _ in range(samples))
            done += samples
        if kernel == "forkpoint":
            round_trip(kc, FORK)
            out["fork"] = float(value(kc, "_fork_ms()")) / 1e3
            rewinds = [round_trip(kc, "%rewind -1") for _ in range(samples)]
            out["rewind"] = statistics.median(rewinds)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        km.context.destroy(linger=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1G")
    parser.add_argument("--cells", default="10,200")
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    cells = [int(n) for n in args.cells.split(",")]
    home = tempfile.mkdtemp(prefix="forkpoint-bench-kernel-")
    subprocess.run([FORKPOINT, "kernel", "install", "--prefix", home], check=True, capture_output=True)
    os.environ["JUPYTER_PATH"] = os.path.join(home, "share", "jupyter")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; medians of {args.samples} cells")
    head = f"{'state':>6} {'cells':>5} | {'ipykernel':>9} {'forkpoint':>9} {'extra':>8} {'2 forks':>8}"
    print(f"{head} | {'rewind':>8}")
    for text in args.sizes.split(","):
        size = parse_size(text) if text != "0" else 0
        base = one("python3", size, cells, args.samples)
        ours = one("forkpoint", size, cells, args.samples)
        for n in cells:
            extra = ours[f"cell@{n}"] - base[f"cell@{n}"]
            print(
                f"{text:>6} {n:>5} | {base[f'cell@{n}'] * 1e3:6.1f} ms {ours[f'cell@{n}'] * 1e3:6.1f} ms "
                f"{extra * 1e3:5.1f} ms {2 * ours['fork'] * 1e3:5.1f} ms | {ours['rewind'] * 1e3:5.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
