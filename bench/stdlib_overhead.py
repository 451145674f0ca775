"""``forkpoint run`` against ``python`` on CPython's own test modules, run as scripts.

Run: ``.venv/bin/python bench/stdlib_overhead.py [--modules a,b] [--repeat 5]``. For each module
of the running interpreter's ``Lib/test`` (copied to a temporary folder, as a user's script
would be), the two commands are alternated ``repeat`` times and the medians printed, with
the start-up of ``forkpoint run`` on an empty script measured in the same rounds. The ratio
that matters is the work: (forkpoint - forkpoint's start-up) / (python - python's start-up).
*warm* runs find the rewritten script in forkpoint's code cache (a script run again, the common
case); *cold* ones get an empty cache each time (the first run after an edit). Exit codes are
compared too: a run that does not give python's is flagged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

MODULES = ",".join(
    ["typing", "enum", "functools", "contextlib", "argparse", "textwrap", "statistics", "fractions"]
    + ["heapq", "bisect", "collections", "string", "copy", "abc"]
)


def timed(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modules", default=MODULES)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    forkpoint = str(Path(sys.executable).with_name("forkpoint"))
    tests = Path(sysconfig.get_paths()["stdlib"]) / "test"
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "empty.py").write_text("pass\n")
        start_py: list[float] = []
        start_fp: list[float] = []
        print(
            f"{'module':<12} {'python':>7} {'warm':>7} {'cold':>7} {'ratio':>6}"
            f" {'work warm':>9} {'work cold':>9}  exit codes"
        )
        for name in args.modules.split(","):
            script = f"test_{name}.py"
            shutil.copy(tests / script, os.path.join(tmp, script))
            py: list[float] = []
            fp: list[float] = []
            cold: list[float] = []
            codes = set()
            for _ in range(args.repeat):
                start_py.append(timed([sys.executable, "empty.py"], tmp)[0])
                start_fp.append(timed([forkpoint, "run", "empty.py"], tmp)[0])
                t, a = timed([sys.executable, script], tmp)
                py.append(t)
                t, b = timed([forkpoint, "run", script, "--on-error", "exit"], tmp)
                fp.append(t)
                with tempfile.TemporaryDirectory() as empty:
                    t, c = timed(
                        [forkpoint, "run", script, "--on-error", "exit"],
                        tmp,
                        {**os.environ, "XDG_CACHE_HOME": empty},
                    )
                cold.append(t)
                codes.add((a, b, c))
            p, f, k = statistics.median(py), statistics.median(fp), statistics.median(cold)
            sp, sf = statistics.median(start_py), statistics.median(start_fp)
            work, work_cold = ((x - sf) / max(p - sp, 1e-3) for x in (f, k))
            same = all(a == b == c for a, b, c in codes)
            said = "same" if same else str(sorted(codes))
            times = f"{p:6.2f}s {f:6.2f}s {k:6.2f}s {f / p:5.2f}x"
            print(f"{name:<12} {times} {work:8.2f}x {work_cold:8.2f}x  {said}")
        sp, sf = statistics.median(start_py), statistics.median(start_fp)
        print(f"start-up: python {sp:.3f} s, forkpoint run {sf:.3f} s")


if __name__ == "__main__":
    main()
