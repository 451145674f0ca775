"""`make demo`: the essay's story in a real terminal, with two examples.

faces.py: load a video, detect faces (the slow part), fail while writing the frames (the
essay's `'frame{}.jpg'` bug). videos.py: a loop over videos whose process() holds both the
expensive detection and a bug after it, with a checkpoint inside process().

For each: `forkpoint run` until the failure, the post-mortem shell opens; the demo fixes the
file as you would in your editor and shows the diff; it types `resume`, and only the work
after the checkpoint runs again, with the new code; then it times a fresh `python` run of the
fixed script for comparison.

    python demo.py [faces|videos|all] [SIZE]     (SIZE: frames of faces.py, default 48)
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
from dataclasses import dataclass
from pathlib import Path

import pexpect

HERE = Path(__file__).parent
PROMPT = re.compile(r"\[(\d+)\]pm>>>")


@dataclass(frozen=True)
class Story:
    script: str
    args: list[str]  # after the output dir
    checkpoint_at: list[str]
    bug: str
    fix: str
    where: str  # what the fix is, in words


def stories(size: int) -> dict[str, Story]:
    return {
        "faces": Story(
            "faces.py",
            [str(size)],
            [],
            'os.path.join(out_dir, "frame{}.jpg")',
            'os.path.join(out_dir, "frame{}.jpg".format(i))',
            "the bug is in draw_boxes()",
        ),
        "videos": Story(
            "videos.py",
            ["5", str(max(size // 4, 2))],
            ["videos.py:46"],
            "/ len(found)",
            "/ len(found) if found else 0.0",
            "process() divides by zero for a video without faces",
        ),
    }


def say(text: str) -> None:
    bold = sys.stdout.isatty()
    sys.stdout.write(f"\n\x1b[1m# {text}\x1b[0m\n" if bold else f"\n# {text}\n")
    sys.stdout.flush()


def tell(story: Story, work: Path) -> bool:
    """One run, failure, fix and resume; True when it ended well."""
    script = work / story.script
    shutil.copy(HERE / story.script, script)
    forkpoint = str(Path(sys.executable).with_name("forkpoint"))
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1")
    if not sys.stdout.isatty():
        env["NO_COLOR"] = "1"
    sites = [arg for spec in story.checkpoint_at for arg in ("--checkpoint-at", spec)]
    args = ["run", story.script, *sites, "--", str(work / "out"), *story.args]
    say("forkpoint " + " ".join(args))
    child = pexpect.spawn(
        forkpoint, args, env=env, cwd=str(work), encoding="utf-8", dimensions=(40, 140), timeout=600
    )
    child.logfile_read = sys.stdout
    child.delaybeforesend = None
    started = time.monotonic()
    child.expect(PROMPT)
    first_run = time.monotonic() - started

    say(f"{story.where}; fixing it in the file, as you would in your editor:")
    old = script.read_text()
    assert old.count(story.bug) == 1, f"examples/{story.script} no longer has the bug this demo fixes"
    new = old.replace(story.bug, story.fix)
    script.write_text(new)
    diff = difflib.unified_diff(old.splitlines(True), new.splitlines(True), story.script, "(fixed)")
    sys.stdout.write("".join(diff))

    say("resume")
    time.sleep(0.2)
    t0 = time.monotonic()
    child.send("resume\r")
    child.expect(pexpect.EOF)
    resumed = time.monotonic() - t0
    child.close()

    say(f"for comparison, a fresh `python {story.script}` of the fixed script:")
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(script), str(work / "fresh"), *story.args], check=True, cwd=work)
    fresh = time.monotonic() - t0
    print(
        f"\n{story.script}: first run until the failure {first_run:.1f} s; resume to done {resumed:.2f} s; "
        f"a fresh run of the fixed script {fresh:.1f} s ({fresh / resumed:.0f}x longer)."
    )
    fresh_files = sorted((work / "fresh").iterdir())
    same = all((work / "out" / p.name).read_bytes() == p.read_bytes() for p in fresh_files if p.is_file())
    print(
        f"the {len(fresh_files)} files of the fresh run, byte for byte: {same}; "
        f"forkpoint exited with {child.exitstatus}."
    )
    return child.exitstatus == 0 and same


def main(which: str = "all", size: str = "48") -> int:
    chosen = stories(int(size))
    names = list(chosen) if which == "all" else [which]
    ok = True
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"forkpoint-demo-{name}-"))
        try:
            ok = tell(chosen[name], work) and ok
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
