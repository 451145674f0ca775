"""A resume against starting over, on classic benchmark programs (tests/programs/classic).

Run: ``.venv/bin/python bench/resume_classic.py [--repeat 3]``. Each program runs with a
checkpoint on a line inside its main loop and fails a few lines below it; the file is fixed
(two lines added above, so every line moves) and resumed. Timed: the resume, from the call to
the program's end; and a whole fresh ``forkpoint run`` of the fixed program with the same
checkpoint, start-up included, in the same round (alternated; medians). A resume must never
cost more than starting over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAMS = Path(__file__).resolve().parent.parent / "tests" / "programs" / "classic"
FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


def fixed(source: str) -> str:
    return "# fixed\n# here\n" + source.replace(', "BUG"', ' or True, "BUG"')


def site_of(source: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if line.endswith("# SITE"))


def resume_time(source: str, folder: str) -> float:
    from forkpoint.controller import Controller

    script = os.path.join(folder, "prog.py")
    Path(script).write_text(source)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null)) as c:
            c.run_script(script, [], lines={script: [site_of(source)]})
            Path(script).write_text(fixed(source))
            start = time.perf_counter()
            resumed = c.resume()
            took = time.perf_counter() - start
            assert resumed.result.status == "exit", resumed.result.traceback
    finally:
        os.close(null)
    return took


def fresh_time(source: str, folder: str) -> float:
    script = os.path.join(folder, "fixed.py")
    text = fixed(source)
    Path(script).write_text(text)
    spec = f"{script}:{site_of(text)}"
    start = time.perf_counter()
    subprocess.run([FORKPOINT, "run", script, "--checkpoint-at", spec], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'program':<15} {'resume':>8} {'fresh forkpoint run':>20} {'ratio':>6}")
    for path in sorted(PROGRAMS.glob("*.py")):
        source = path.read_text()
        resumes, freshes = [], []
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(args.repeat):
                resumes.append(resume_time(source, folder))
                freshes.append(fresh_time(source, folder))
            shutil.rmtree(folder, ignore_errors=True)
        r, f = statistics.median(resumes), statistics.median(freshes)
        print(f"{path.stem:<15} {r:7.2f}s {f:19.2f}s {r / f:5.2f}x")


if __name__ == "__main__":
    main()
