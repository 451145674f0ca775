"""Parallel native work in a head before a checkpoint and in heads rewound to it, in one run.

Issue 13's bar: each runtime runs after a rewind at >= 0.9x the speed it had before. Three
kinds of work, each in a fresh controller: OpenCV (GaussianBlur, its pthreads pool), GNU
OpenMP (scikit-learn's HistGradientBoosting fit, its vendored libgomp) and OpenBLAS (a numpy
matmul). The head warms the library up, a checkpoint is taken, then rounds alternate: the work
timed in the head that took the checkpoint, then in a head rewound to it. Each round runs the
work ``--repeat`` times in the head itself and keeps the median; the figure is the median of
the rounds. ``--without-adapters`` leaves the agent's before-fork adapters out (OpenCV then
runs single-threaded after a rewind; OpenMP waits forever, so it is skipped).

Also the adapters' own cost, which is in every checkpoint's pause: ``native.before_fork()``
timed in a head with all three loaded, each time right after all three ran (their workers live).

    python bench/native.py [--rounds 5] [--repeat 5] [--without-adapters]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from checkpoint import ok  # the same checked input, in one place

from forkpoint.controller import Controller

WORK = {
    "OpenCV blur": (
        "import cv2, numpy as np\n"
        "img = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)\n"
        "def work():\n    cv2.GaussianBlur(img, (31, 31), 0)\n",
    ),
    "OpenMP fit": (
        "import numpy as np\nfrom sklearn.ensemble import HistGradientBoostingClassifier as H\n"
        "rng = np.random.default_rng(0); X = rng.random((20000, 20)); y = (X[:, 0] > 0.5).astype(int)\n"
        "def work():\n    H(max_iter=20, random_state=0).fit(X, y)\n",
    ),
    "OpenBLAS matmul": (
        "import numpy as np\na = np.random.default_rng(0).random((1200, 1200))\ndef work():\n    a @ a\n",
    ),
}
TIMER = (
    "import statistics, time\n"
    "def timed(n):\n"
    "    out = []\n"
    "    for _ in range(n):\n"
    "        t0 = time.perf_counter(); work(); out.append(time.perf_counter() - t0)\n"
    "    return statistics.median(out)\n"
    "work()\n"  # warm: the pool has run before the checkpoint
)
ADAPTER_COST = (
    "import time\nfrom forkpoint.agent import native\n"
    "costs = []\n"
    "for _ in range(20):\n"
    "    for work in works:\n        work()\n"  # every pool has live workers again
    "    t0 = time.perf_counter(); native.before_fork(); costs.append(time.perf_counter() - t0)\n"
    "cost = statistics.median(costs)\n"
)


def value(c: Controller, expr: str) -> float:
    good, text = c.evaluate(expr)
    if not good:
        raise SystemExit(text)
    return float(text)


def one_round(setup: str, repeat: int) -> tuple[float, float]:
    """Work timed in a fresh head right after it took a checkpoint, then in a head rewound
    to that checkpoint."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null)) as c:
            base = ok(c, setup + TIMER)
            ok(c, f"t = timed({repeat})")
            before = value(c, "t")
            c.rewind(base)
            ok(c, f"t = timed({repeat})")
            return before, value(c, "t")
    finally:
        os.close(null)


def adapter_cost() -> float:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null)) as c:
            ok(c, "works = []")
            for (setup,) in WORK.values():
                ok(c, setup + TIMER + "works.append(work)\n")
            ok(c, ADAPTER_COST)
            return value(c, "cost")
    finally:
        os.close(null)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--without-adapters", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; medians of {args.rounds} rounds")
    print(f"{'work':16} {'before':>9} {'rewound':>9} {'speed':>6}")
    for name, (setup,) in WORK.items():
        if args.without_adapters:
            if name.startswith("OpenMP"):
                print(f"{name:16} {'':>9} {'hangs':>9}")
                continue
            setup = "from forkpoint.agent import native; native.before_fork = lambda: None\n" + setup
        pairs = [one_round(setup, args.repeat) for _ in range(args.rounds)]
        before = statistics.median(p[0] for p in pairs)
        after = statistics.median(p[1] for p in pairs)
        print(f"{name:16} {before * 1e3:6.1f} ms {after * 1e3:6.1f} ms {before / after:5.2f}x", flush=True)
    if not args.without_adapters:
        cost = adapter_cost() * 1e3
        print(f"adapters before a fork, all three loaded and their pools just used: {cost:.3f} ms")


if __name__ == "__main__":
    main()
