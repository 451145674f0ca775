"""Fix-to-result on examples/faces.py: the time from ``resume`` to done, split into the work the
fixed program still has to do after the checkpoint (the post-processing) and what forkpoint
adds; next to a fresh ``python faces.py`` of the fixed script, in the same run.

Run: ``.venv/bin/python bench/fix_to_result.py [FRAMES]`` (part of ``make bench``).

- resume: ``Controller.resume()`` from the call to the script's exit (diff, fork of the
  checkpoint, swap, the rest of the script), output to /dev/null, best of three.
- post-processing: the same statements of the fixed script (those after the checkpoint that
  resume picked), timed in a plain ``python`` that ran the ones before untimed, best of three.
- fresh: ``python faces.py`` of the fixed script, start to end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forkpoint.controller import Controller

HERE = Path(__file__).parent.parent / "examples"
BUG = 'os.path.join(out_dir, "frame{}.jpg")'
FIX = 'os.path.join(out_dir, "frame{}.jpg".format(i))'

# Runs the fixed script's top-level statements; prints the time of those from START on.
POST = """
import ast, sys, time
path, start = sys.argv[1], int(sys.argv[2])
sys.argv = [path, *sys.argv[3:]]
tree = ast.parse(open(path).read(), path)
ns = {"__name__": "__main__", "__file__": path}
elapsed = 0.0
for i, stmt in enumerate(tree.body):
    code = compile(ast.Module([stmt], []), path, "exec")
    t0 = time.perf_counter()
    exec(code, ns)
    if i >= start:
        elapsed += time.perf_counter() - t0
print(elapsed, file=sys.stderr)
"""


def resume_once(work: Path, frames: str) -> tuple[float, int]:
    """Seconds from resume() to the script's exit, and the top-level statement it went on from."""
    script = work / "faces.py"
    shutil.copy(HERE / "faces.py", script)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null)) as c:
            assert c.run_script(str(script), [str(work / "out"), frames]).status == "error"
            script.write_text(script.read_text().replace(BUG, FIX))
            t0 = time.perf_counter()
            resumed = c.resume()
            elapsed = time.perf_counter() - t0
            assert resumed.result.status == "exit", resumed.result.traceback
            site = c.view()[resumed.checkpoint].site
            assert site is not None
            return elapsed, site + 1
    finally:
        os.close(null)


def post_processing(work: Path, frames: str, start: int) -> float:
    script = work / "fixed.py"
    script.write_text((HERE / "faces.py").read_text().replace(BUG, FIX))
    argv = [sys.executable, "-c", POST, str(script), str(start), str(work / "post"), frames]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return float(done.stderr.strip().splitlines()[-1])


def fresh(work: Path, frames: str) -> float:
    script = work / "fixed.py"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(script), str(work / "fresh"), frames], check=True, capture_output=True
    )
    return time.perf_counter() - t0


def main(frames: str = "48") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [resume_once(work, frames) for _ in range(3)]
        resume = min(t for t, _ in runs)
        start = runs[0][1]
        post = min(post_processing(work, frames, start) for _ in range(3))
        whole = fresh(work, frames)
    print(f"faces.py, {frames} frames of 512x512; resume went on from top-level statement {start}")
    print(f"  resume to done        {resume * 1000:7.1f} ms")
    print(f"  post-processing alone {post * 1000:7.1f} ms   (the fixed statements after the checkpoint)")
    print(f"  forkpoint's share     {(resume - post) * 1000:7.1f} ms   (target: under 50 ms)")
    print(f"  fresh python run      {whole * 1000:7.1f} ms   ({whole / resume:.0f}x the resume)")


if __name__ == "__main__":
    main(*sys.argv[1:])
