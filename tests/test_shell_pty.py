"""The shell in a real pty: what a user types and sees, and that nothing outlives it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pexpect
import psutil
import pytest
from conftest import processes_with
from terminal import Terminal, env_for, wait_until

pytestmark = pytest.mark.pty


def agents_of(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_the_issue_transcript(term: Terminal) -> None:
    assert term.current == 0
    term.run("import numpy as np")
    term.run("a = np.arange(10**7)")
    term.run("x = 0")
    assert term.current == 3
    term.run("x += 1; a[:] = 0")
    assert term.run(":rewind 3").strip() == "rewound to [3]"
    assert term.run("x, int(a[5])").strip() == "(0, 5)"
    assert term.current == 5
    out = term.run("x += 1; print(y)")
    assert "NameError: name 'y' is not defined" in out and "rolled back to [5]" in out
    assert term.current == 5
    assert term.run("x").strip() == "0"
    listing = term.run(":checkpoints")
    assert "x += 1; a[:] = 0" in listing and "MEMORY" in listing
    tree = term.run(":tree")
    assert "├─[4] x += 1; a[:] = 0" in tree and "<- head" in tree


def test_echo_and_underscore(term: Terminal) -> None:
    assert term.run("6 * 7").strip() == "42"
    assert term.run("_ + 1").strip() == "43"
    assert term.run("None").strip() == ""


def test_multiline_paste_and_typed_blocks(term: Terminal) -> None:
    term.paste("def f(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n")
    assert term.run("f(10)").strip() == "45"
    # typed line by line: the shell indents after ':' and a blank line ends the block
    term.child.send("for i in range(2):\r")
    term.child.send("print('it', i)\r")
    term.child.send("\r")
    assert "it 0\nit 1" in term.wait_prompt()


def test_tab_completes_from_the_head(term: Terminal) -> None:
    term.run("my_long_variable_name = 5")
    term.child.send("my_long_v\t")
    term.wait_screen("my_long_variable_name")
    assert term.run("").strip().endswith("5")


def test_commands(term: Terminal) -> None:
    term.run("x = 1")
    assert "labelled [1] 'one'" in term.run(":label one")
    term.run("x = 2")
    term.run("y = [1, 2]")
    assert term.run(":rewind -2").strip() == "rewound to [1]"
    assert term.run(":undo").strip() == "rewound to [3]"  # undoes the rewind
    assert term.run("x, y").strip() == "(2, [1, 2])"
    assert term.run(":undo").strip() == "rewound to [3]"  # undoes the input 'x, y'
    assert term.run(":rewind -2").strip() == "rewound to [1]"
    assert term.run("x").strip() == "1"
    assert term.run(":rewind one").strip() == "rewound to [1]"
    diff = term.run(":diff 1 3")
    assert "~ x: 1 -> 2" in diff and "+ y = [1, 2]" in diff
    mem = term.run(":mem")
    assert "budget" in mem and "head:" in mem
    help_text = term.run(":help")
    for name in ("checkpoints", "tree", "rewind", "undo", "label", "diff", "mem", "quit"):
        assert f":{name}" in help_text
    assert "there is no command :frobnicate" in term.run(":frobnicate")
    assert "there is no checkpoint [42]" in term.run(":rewind 42")


def test_ctrl_c_rolls_back_the_running_input(term: Terminal) -> None:
    term.run("x = 0")
    term.child.send("x += 1; import time; time.sleep(60)\r")
    time.sleep(0.5)
    term.child.sendintr()
    out = term.wait_prompt()
    assert "KeyboardInterrupt" in out and "interrupted; rolled back to [1]" in out
    assert term.run("x").strip() == "0"


def test_second_ctrl_c_kills_a_stuck_head(term: Terminal) -> None:
    term.run("x = 0")
    term.child.send(
        "x += 1\rimport signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import time; time.sleep(60)\r"
    )
    # two inputs were typed: the first runs, then the stuck one
    time.sleep(1.0)
    term.child.sendintr()
    term.expect("does not stop; press Ctrl-C again", timeout=10)
    term.child.sendintr()
    out = term.wait_prompt()
    assert "interrupted; rolled back" in out
    assert term.run("x").strip() == "1"


@pytest.mark.parametrize(
    "code, message",
    [
        ("import ctypes; ctypes.string_at(0)", "SIGSEGV (segmentation fault)"),
        ("import os; os._exit(0)", "exited with status 0"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
    ],
)
def test_shell_survives_a_dying_head(term: Terminal, code: str, message: str) -> None:
    term.run("x = 'kept'")
    out = term.run(code)
    assert message in out and "rewound to [1]" in out
    assert term.run("x").strip() == "'kept'"


def test_head_killed_from_outside_while_idle(term: Terminal) -> None:
    term.run("x = 'kept'")
    head = term.run("import os; os.getpid()").strip()
    os.kill(int(head), signal.SIGKILL)
    out = term.run("x")
    assert "the head was killed by SIGKILL" in out and "'kept'" in out


def test_quit_leaves_no_process(term: Terminal, isolated: str) -> None:
    term.run(
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    )
    term.run("x = 1")
    term.child.send(":quit\r")
    term.child.expect(pexpect.EOF)
    assert wait_until(lambda: not processes_with(isolated), timeout=3)


def test_ctrl_d_leaves_no_process(term: Terminal, isolated: str) -> None:
    term.run("x = 1")
    term.child.sendeof()
    term.child.expect(pexpect.EOF)
    term.child.wait()
    assert term.child.exitstatus == 0
    assert wait_until(lambda: not processes_with(isolated), timeout=3)


def test_exit_ends_the_shell_with_its_code(term: Terminal) -> None:
    term.child.send("raise SystemExit(3)\r")
    term.child.expect(pexpect.EOF)
    term.child.wait()
    assert term.child.exitstatus == 3


def test_terminal_hangup_leaves_no_process(term: Terminal, isolated: str) -> None:
    term.run("x = 1")
    term.run("y = 2")
    try:
        term.child.close(force=False)  # closes the pty: the kernel sends SIGHUP
    except pexpect.ExceptionPexpect:
        pass  # pexpect gives it 0.3 s before it calls that a failure; a busy machine needs more
    assert wait_until(lambda: not processes_with(isolated), timeout=5)


def test_killed_controller_takes_every_checkpoint_with_it(term: Terminal, isolated: str) -> None:
    for i in range(5):
        term.run(f"x{i} = {i}")
    agents = agents_of(term.pid)
    assert len(agents) >= 6  # the head and its checkpoints
    os.kill(term.pid, signal.SIGKILL)
    start = time.monotonic()
    assert wait_until(lambda: not processes_with(isolated), timeout=1.0)
    assert time.monotonic() - start < 1.0


def test_history_persists_across_sessions(tmp_path: Path, isolated: str) -> None:
    t = Terminal(["shell"], env_for(tmp_path, isolated))
    t.wait_prompt()
    t.run("remembered = 1")
    t.child.sendeof()
    t.child.expect(pexpect.EOF)
    t.close()
    history = tmp_path / "state" / "forkpoint" / "history"
    assert "remembered = 1" in history.read_text()
    assert os.stat(history.parent).st_mode & 0o777 == 0o700
    t = Terminal(["shell"], env_for(tmp_path, isolated))
    try:
        t.wait_prompt()
        t.child.send("\x1b[A")  # up arrow recalls it (highlighted, so escapes sit between tokens)
        t.expect("remembered")
        t.run("")  # runs the recalled input
        assert t.current == 1
        assert t.run("remembered").strip() == "1"
    finally:
        t.close()


def test_rewind_many_times_and_branch(term: Terminal) -> None:
    term.run("import numpy as np; a = np.zeros(10**6)")
    term.run("n = 0")
    for i in range(6):
        term.run(f"n += {i + 1}; a[:] = {i + 1}")
        assert term.run(":rewind 2").strip() == "rewound to [2]"
        assert term.run("n, float(a.sum())").strip() == "(0, 0.0)"
    tree = term.run(":tree")
    assert tree.count("├─") >= 5
