"""`forkpoint run` in a real pty: failure, post-mortem, edit, resume; and the command line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from terminal import Terminal, command, env_for

pytestmark = pytest.mark.pty
PROGRAMS = Path(__file__).parent / "programs"
FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


def forkpoint(tmp_path: Path, marker: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The forkpoint command with no terminal, run in ``tmp_path``."""
    return command(tmp_path, marker, FORKPOINT, *args)


def test_fail_inspect_edit_resume(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "pipeline.py"
    shutil.copy(PROGRAMS / "pipeline.py", script)
    t = Terminal(["run", str(script), "--", "3"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        out = t.wait_prompt()
        assert "loaded 3 frames from pipeline.py as __main__" in out
        assert "RuntimeError: every frame was written to frame{}.jpg" in out
        assert "post-mortem" in out
        assert t.run("names").strip() == "['frame{}.jpg', 'frame{}.jpg', 'frame{}.jpg']"
        assert "there is no" not in t.run("up")  # prints the outer frame or says it is the outermost
        listing = t.run(":checkpoints")
        assert "after line 16: detections = [detect(f) for f" in listing
        shutil.copy(PROGRAMS / "pipeline_fixed.py", script)
        text = t.finish("resume")
        assert "resuming from [" in text and 'after line 17: print("detected"' in text
        assert "wrote frame0.jpg, frame1.jpg, frame2.jpg" in text
        assert text.count("loaded 3 frames") == 1  # the expensive part did not run again
        assert t.child.exitstatus == 0
    finally:
        t.close()


def test_on_error_exit_and_options_after_the_script(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "s.py"
    script.write_text("print('before')\nraise ValueError('boom')\n")
    done = forkpoint(tmp_path, isolated, "run", str(script), "--on-error", "exit")
    assert done.returncode == 1
    assert done.stdout == "before\n" and "ValueError: boom" in done.stdout + done.stderr


def test_notices_sit_between_the_lines_the_program_prints(tmp_path: Path, isolated: str) -> None:
    # Unbuffered, each part of a print is its own write: a notice shown late would split one.
    script = tmp_path / "s.py"
    body = "def show(i):\n    print('part', 'of', 'line', i)\n\n\ndef check():\n    {}\n\n\n"
    loop = "check()\nfor i in range(300):\n    show(i)\n"
    script.write_text(body.format("raise ValueError('boom')") + loop)
    t = Terminal(["run", str(script)], dict(env_for(tmp_path, isolated), PYTHONUNBUFFERED="1"))
    try:
        assert "ValueError: boom" in t.wait_prompt()
        script.write_text(body.format("return None").replace("'of'", "'of', 'new'") + loop)
        lines = t.finish("resume").splitlines()
    finally:
        t.close()
    notice = lines.index("forkpoint: new code for check, show")
    assert lines[notice + 1 :] == [f"part of new line {i}" for i in range(300)]


def test_without_a_terminal_errors_exit(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint(sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n")
    done = forkpoint(tmp_path, isolated, "run", str(script), "--", "4", "--x")
    assert done.returncode == 4 and done.stdout == "['4', '--x']\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "s.py", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["run", "missing.py"], "missing.py does not exist."),
        (["run", "--python", "/bin/true", "s.py"], "/bin/true is not a Python interpreter"),
        (["run", "--python", "/bin/sleep", "s.py"], "/bin/sleep is not a Python interpreter"),
    ],
)
def test_bad_command_lines_say_so(tmp_path: Path, isolated: str, args: list[str], message: str) -> None:
    (tmp_path / "s.py").write_text("x = 1\n")
    done = forkpoint(tmp_path, isolated, *args)
    assert done.returncode == 2 and message in done.stderr


def test_batch_with_checkpoint_at_a_function(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "batch.py"
    shutil.copy(PROGRAMS / "batch.py", script)
    args = ["run", str(script), "--checkpoint-at", "process", "--checkpoint-every-hit", "--", "5"]
    t = Terminal(args, env_for(tmp_path, isolated))
    try:
        out = t.wait_prompt()
        assert "done 3\n" in out and "IndexError" in out
        assert t.run("video").strip() == "4"  # evaluated in process(), where it failed
        shutil.copy(PROGRAMS / "batch_fixed.py", script)
        text = t.finish("resume")
        assert "resuming from [" in text and "the entry of call 4 of process()" in text
        assert "calls 1-3 of process() in this statement ran the old code" in text
        assert "done 4\ndone 5\n" in text and "'video5.mp4:153'" in text and "'VIDEO4.MP4:123'" in text
        assert t.child.exitstatus == 0
    finally:
        t.close()


def test_batch_with_checkpoint_at_a_line_inside_the_function(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "batch.py"
    shutil.copy(PROGRAMS / "batch.py", script)
    args = [
        "run",
        "batch.py",
        "--checkpoint-at",
        "batch.py:9",
        "--checkpoint-every-hit",
        "--",
        "5",
    ]  # after the expensive part
    t = Terminal(args, env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        out = t.wait_prompt()
        assert "done 3\n" in out and "IndexError" in out
        shutil.copy(PROGRAMS / "batch_fixed.py", script)
        text = t.finish("resume")
        assert "resuming from [" in text and "before line 9 in call 4 of process(): name = " in text
        assert "calls 1-3 of process() in this statement ran the old code; resume --from" in text
        assert "done 4\ndone 5\n" in text and "'video5.mp4:153'" in text and "'VIDEO4.MP4:123'" in text
        assert t.child.exitstatus == 0
    finally:
        t.close()


def test_rewind_in_post_mortem_pauses_at_the_checkpoint(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "batch.py"
    shutil.copy(PROGRAMS / "batch.py", script)
    args = ["run", "batch.py", "--checkpoint-at", "batch.py:9", "--checkpoint-every-hit", "--", "5"]
    t = Terminal(args, env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        listing = t.run(":checkpoints")
        second = next(line for line in listing.splitlines() if "in call 2 of process()" in line)
        target = second.split()[0].strip("[]*>")
        out = t.run(f"rewind {target}")
        assert f"rewound to [{target}]" in out and "paused before line 9 in call 2 of process()" in out
        assert t.run("video, total").strip() == "(2, 63)"  # the state of call 2 at that line
        assert "batch.py" in t.run("up") and t.run("results").strip() == "['video{}.mp4:33']"
        shutil.copy(PROGRAMS / "batch_fixed.py", script)
        text = t.finish("resume")
        assert f"resuming from [{target}] before line 9 in call 2 of process()" in text
        assert "done 2\ndone 3\ndone 4\ndone 5\n" in text and "'video2.mp4:63'" in text
        assert t.child.exitstatus == 0
    finally:
        t.close()


def test_dash_i_opens_the_shell_in_the_finished_script(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys\ndata = [1, 2, 3]\nprint('ran', sys.argv[1:])\n")
    t = Terminal(["run", "s.py", "-i", "--", "x"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        assert "ran ['x']" in t.wait_prompt()
        assert t.run("sum(data)").strip() == "6"
        assert "ZeroDivisionError" in t.run("data.append(4); 1 / 0")
        assert t.run("data").strip() == "[1, 2, 3]"  # the failed input was rolled back
        t.finish(":quit")
        assert t.child.exitstatus == 0
    finally:
        t.close()


def test_lines_whose_checkpoint_stands_elsewhere_say_so(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "class C:\n    x = 1\n\n    def m(self):\n        try:\n            return 1\n"
        "        finally:\n            print('cleanup')\n\n\nprint(C().m())\n"
    )
    done = forkpoint(
        tmp_path, isolated, "run", "s.py", "--checkpoint-at", "s.py:8", "--checkpoint-at", "s.py:4"
    )
    # stdout is the program's, as under python; forkpoint's notes go to stderr
    assert done.returncode == 0 and done.stdout == "cleanup\n1\n"
    assert "line 8 is in a finally clause, so the checkpoint is at the entry of C.m() instead" in done.stderr
    assert "line 4 defines C.m, so the checkpoint is at the entry of each call" in done.stderr
    done = forkpoint(tmp_path, isolated, "run", "s.py", "--checkpoint-at", "s.py:2")
    assert (
        done.returncode == 2
        and "--checkpoint-at s.py:2: line 2 is in a class body, which runs once." in done.stderr
    )


def test_checkpoint_at_a_name_that_is_not_there(tmp_path: Path, isolated: str) -> None:
    shutil.copy(PROGRAMS / "batch.py", tmp_path / "batch.py")
    done = forkpoint(tmp_path, isolated, "run", "batch.py", "--checkpoint-at", "proces", "--", "2")
    assert done.returncode == 2
    assert "forkpoint: --checkpoint-at proces names no function." in done.stderr
    assert "did you mean process?" in done.stderr


def test_checkpoint_at_a_generator_is_refused(tmp_path: Path, isolated: str) -> None:
    (tmp_path / "g.py").write_text("def frames():\n    yield 1\n\nprint(list(frames()))\n")
    done = forkpoint(tmp_path, isolated, "run", "g.py", "--checkpoint-at", "frames")
    assert done.returncode == 2
    assert "frames is a generator or coroutine, whose calls cannot be entered again." in done.stderr


@pytest.mark.slow
def _demo(story: str, size: str, tmp_path: Path, marker: str) -> str:
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    demo = Path(__file__).parent.parent / "examples" / "demo.py"
    done = subprocess.run(
        [sys.executable, str(demo), story, size],
        env=env_for(tmp_path, marker),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    return done.stdout


def test_the_faces_demo_end_to_end(tmp_path: Path, isolated: str) -> None:
    """`make demo`: run faces.py, fail on the essay's bug, fix, resume; only drawing runs again."""
    out = _demo("faces", "6", tmp_path, isolated)
    assert "RuntimeError: 6 frames went to 1 file(s)" in out
    assert "resuming from [" in out and "after line 60: print(" in out and "new code for draw_boxes" in out
    assert out.count("loaded 6 frames") == 2  # the first run and the fresh comparison, not the resume
    assert "files of the fresh run, byte for byte: True; forkpoint exited with 0" in out


def test_the_videos_demo_end_to_end(tmp_path: Path, isolated: str) -> None:
    """The batch case: the detection and the bug in process(), a checkpoint between them."""
    out = _demo("videos", "8", tmp_path, isolated)
    assert "ZeroDivisionError: division by zero" in out
    # The latest checkpoint taken before the failure in call 3: call 3's own, or an earlier
    # call's when the hits were spaced out (a hit after less than ~20 pauses of work is not
    # checkpointed); the resume says which.
    found = re.search(r"resuming from \[\d+\] before line 46 in call (\d) of process\(\): found = ", out)
    assert found, out
    call = int(found.group(1))
    assert call in (1, 2, 3)
    if call > 1:
        assert f"calls 1-{call - 1} of process() in this statement ran the old code; resume --from" in out
    # that call's faces were searched once in the first run and once in the fresh run, not on
    # resume; the calls after it up to the failure once more; the later ones as in any run
    assert out.count(f"video {call}: searched") == 2 and out.count("video 4: searched") == 2
    assert all(out.count(f"video {later}: searched") == 3 for later in range(call + 1, 4))
    assert call == 3 or "took no checkpoint (spaced out" in out
    assert "files of the fresh run, byte for byte: True; forkpoint exited with 0" in out


def test_a_script_that_segfaults_can_be_fixed_and_resumed(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "s.py"
    script.write_text('x = 1\nprint("before")\nimport ctypes\nctypes.string_at(0)\nprint("after")\n')
    t = Terminal(["run", str(script)], env_for(tmp_path, isolated))
    try:
        out = t.wait_prompt()
        assert "the script's process was killed by SIGSEGV (segmentation fault)" in out
        script.write_text('x = 1\nprint("before")\nimport ctypes\nprint("fixed", x)\nprint("after")\n')
        t.finish("resume")
        assert "after line 3: import ctypes" in t.text() and "fixed 1\nafter" in t.text()
        assert t.text().count("before") == 1 and t.child.exitstatus == 0
    finally:
        t.close()
