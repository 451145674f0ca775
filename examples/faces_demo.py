"""`make demo`: the essay's story with examples/faces.py, in a real terminal.

1. `forkpoint run faces.py` loads a video, detects faces (the slow part) and fails while writing
   the frames (the essay's `'frame{}.jpg'` bug). forkpoint opens its post-mortem shell.
2. The demo fixes the file, as you would in your editor, and shows the diff.
3. It types `resume`: only the drawing step runs again, with the new code.
4. It times a fresh `python faces.py` of the fixed script, for comparison.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect

HERE = Path(__file__).parent
PROMPT = re.compile(r"\[(\d+)\]pm>>>")
BUG = 'os.path.join(out_dir, "frame{}.jpg")'
FIX = 'os.path.join(out_dir, "frame{}.jpg".format(i))'


def say(text: str) -> None:
    dim = sys.stdout.isatty()
    sys.stdout.write(f"\n\x1b[1m# {text}\x1b[0m\n" if dim else f"\n# {text}\n")
    sys.stdout.flush()


def main(frames: str = "48") -> int:
    work = Path(tempfile.mkdtemp(prefix="forkpoint-demo-"))
    script = work / "faces.py"
    shutil.copy(HERE / "faces.py", script)
    forkpoint = str(Path(sys.executable).with_name("forkpoint"))
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1")
    if not sys.stdout.isatty():
        env["NO_COLOR"] = "1"

    say(f"forkpoint run faces.py {work / 'out'} {frames}")
    child = pexpect.spawn(
        forkpoint,
        ["run", str(script), "--", str(work / "out"), frames],
        env=env,
        cwd=str(work),
        encoding="utf-8",
        dimensions=(40, 140),
        timeout=600,
    )
    child.logfile_read = sys.stdout
    child.delaybeforesend = None
    started = time.monotonic()
    child.expect(PROMPT)
    first_run = time.monotonic() - started

    say("the bug is in draw_boxes(); fixing it in the file, as you would in your editor:")
    old = script.read_text()
    assert old.count(BUG) == 1, "examples/faces.py no longer has the bug this demo fixes"
    new = old.replace(BUG, FIX)
    script.write_text(new)
    diff = difflib.unified_diff(old.splitlines(True), new.splitlines(True), "faces.py", "faces.py (fixed)")
    sys.stdout.write("".join(diff))

    say("resume")
    time.sleep(0.2)
    t0 = time.monotonic()
    child.send("resume\r")
    child.expect(pexpect.EOF)
    resumed = time.monotonic() - t0
    child.close()

    say("for comparison, a fresh `python faces.py` of the fixed script:")
    fresh_dir = work / "fresh"
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(script), str(fresh_dir), frames], check=True)
    fresh = time.monotonic() - t0

    written = sorted(p.name for p in (work / "out").glob("frame[0-9]*.jpg"))
    print(
        f"\nfirst run until the failure: {first_run:.1f} s; resume to done: {resumed:.2f} s; "
        f"a fresh run of the fixed script: {fresh:.1f} s ({fresh / resumed:.0f}x longer)."
    )
    print(f"{len(written)} frames in {work / 'out'}; forkpoint exited with {child.exitstatus}.")
    return 0 if child.exitstatus == 0 and len(written) == int(frames) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
