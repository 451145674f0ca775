"""Start-up of ``forkpoint run`` and its cost on a CPU-bound script, next to python in the
same run, alternated, medians.

What a user waits for: the whole command, from exec to exit, of an empty script, and of a
script that computes for a few seconds (issue 12's bars: at most 0.1 s over python for the
empty one, at most 1.03x python for the CPU-bound one). Bytecode caching is left as a user has
it (``PYTHONDONTWRITEBYTECODE`` is removed from the environment: with it set, every start
compiles forkpoint from source again), and each command runs once before the timed rounds.

    python bench/startup.py [--rounds 15] [--cpu-seconds 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from run_overhead import SCRIPT as CPU  # the same CPU-bound script, in one place
from run_overhead import timed


def alternate(cases: dict[str, list[str]], rounds: int, env: dict[str, str]) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():
        timed(argv, env)  # warm: caches, bytecode
    for _ in range(rounds):
        for name, argv in cases.items():
            times[name].append(timed(argv, env))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cpu-seconds", type=float, default=4.0)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    forkpoint = str(Path(sys.executable).with_name("forkpoint"))
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp, "empty.py")
        empty.write_text("")
        cpu = Path(tmp, "cpu.py")
        cpu.write_text(CPU)
        got = alternate(
            {"python": [sys.executable, str(empty)], "forkpoint run": [forkpoint, "run", str(empty)]},
            args.rounds,
            env,
        )
        over = got["forkpoint run"] - got["python"]
        print(
            f"empty script: python {got['python'] * 1000:.0f} ms, "
            f"forkpoint run {got['forkpoint run'] * 1000:.0f} ms"
            f" ({over * 1000:+.0f} ms; bar +100 ms: {'met' if over <= 0.1 else 'MISSED'})"
        )
        limit = 100_000
        while timed([sys.executable, str(cpu), str(limit)], env) < args.cpu_seconds / 4:
            limit *= 2
        limit = int(limit * args.cpu_seconds / timed([sys.executable, str(cpu), str(limit)], env))
        got = alternate(
            {
                "python": [sys.executable, str(cpu), str(limit)],
                "forkpoint run": [forkpoint, "run", str(cpu), "--", str(limit)],
            },
            max(3, args.rounds // 3),
            env,
        )
        ratio = got["forkpoint run"] / got["python"]
        print(
            f"CPU-bound script (limit {limit}): python {got['python']:.2f} s, forkpoint run "
            f"{got['forkpoint run']:.2f} s: {ratio:.3f}x (bar 1.03x: {'met' if ratio <= 1.03 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
