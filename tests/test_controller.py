"""Process tests: a real controller, real heads and checkpoints, real forks and sockets."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import time
from pathlib import Path

import pytest
from conftest import said

from forkpoint.controller import Controller, memory
from forkpoint.controller.events import Evicted, HeadDied
from forkpoint.controller.supervisor import is_alive
from forkpoint.errors import ForkpointError
from forkpoint.shell.messages import death_text


def value(c: Controller, expr: str) -> str:
    ok, text = c.evaluate(expr)
    assert ok, text
    return text


def run(c: Controller, code: str) -> int:
    result = c.execute(textwrap.dedent(code))
    assert result.status == "ok", result
    assert result.checkpoint is not None
    return result.checkpoint


def test_checkpoint_zero_is_the_fresh_interpreter(controller: Controller) -> None:
    assert controller.current == 0
    assert value(controller, "sorted(k for k in globals() if not k.startswith('__'))") == "[]"
    assert value(controller, "__name__") == "'__main__'"


def test_each_input_makes_a_checkpoint_with_a_new_id(controller: Controller) -> None:
    ids = [run(controller, f"x{i} = {i}") for i in range(4)]
    assert ids == [1, 2, 3, 4]
    controller.rewind(2)
    assert run(controller, "y = 0") == 5  # ids are never reused


def test_failed_input_is_rolled_back(controller: Controller, output: Path) -> None:
    run(controller, "x = 0")
    result = controller.execute("x += 1; print('half'); print(y)")
    assert result.status == "error" and result.rolled_back_to == 1
    assert result.traceback is not None and "NameError: name 'y' is not defined" in result.traceback
    assert value(controller, "x") == "0"
    assert "half" in output.read_text()


def test_rewind_many_times_to_the_same_checkpoint(controller: Controller) -> None:
    run(controller, "import numpy as np; a = np.arange(1_000_000)")
    base = run(controller, "x = 0")
    for i in range(20):
        run(controller, f"x += {i + 1}; a[:] = {i}")
        controller.rewind(base)
        assert value(controller, "(x, int(a[5]), int(a.sum()))") == f"(0, 5, {sum(range(1_000_000))})"


def test_branches_keep_their_own_state(controller: Controller) -> None:
    fork_point = run(controller, "items = []")
    left = run(controller, "items.append('left')")
    controller.rewind(fork_point)
    right = run(controller, "items.append('right')")
    controller.rewind(left)
    assert value(controller, "items") == "['left']"
    controller.rewind(right)
    assert value(controller, "items") == "['right']"
    assert {n.id for n in controller.view().children(fork_point)} == {left, right}


def test_relative_and_labelled_rewind_and_undo(controller: Controller) -> None:
    run(controller, "x = 1")
    controller.label("one")
    run(controller, "x = 2")
    run(controller, "x = 3")
    controller.rewind("-2")
    assert value(controller, "x") == "1"
    controller.undo()
    assert value(controller, "x") == "3"
    controller.rewind("one")
    assert value(controller, "x") == "1"
    with pytest.raises(ForkpointError, match="no checkpoint is labelled 'two'"):
        controller.rewind("two")
    with pytest.raises(ForkpointError, match=r"there is no checkpoint \[99\]"):
        controller.rewind(99)


def test_file_offsets_come_back_on_rewind(controller: Controller, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(b"".join(b"line %d\n" % i for i in range(2000)))
    run(
        controller,
        f"import os; f = open({str(data)!r}); first = f.readline(); fd = os.open({str(data)!r}, os.O_RDONLY)",
    )
    mark = run(controller, "second = f.readline(); raw = os.read(fd, 7)")
    run(controller, "rest = f.read(); more = os.read(fd, 100)")
    for _ in range(2):
        controller.rewind(mark)
        assert value(controller, "f.readline()") == repr("line 2\n")
        assert value(controller, "os.read(fd, 7)") == repr(b"line 1\n")


@pytest.mark.parametrize("imported_first", [False, True], ids=["agent-first", "random-first"])
def test_random_draws_repeat_after_rewind(
    imported_first: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: Path
) -> None:
    """The state is read in the checkpoint's child when the agent's after-fork hook runs
    before random's reseed; when something imported random first, in the head instead."""
    if imported_first:
        (tmp_path / "sitecustomize.py").write_text("import random\n")
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out)) as c:
            assert value(c, "__import__('forkpoint.agent.rng').agent.rng.in_child") == str(not imported_first)
            mark = run(c, "import random; random.seed(7); random.random()")
            first = value(c, "[random.random() for _ in range(5)]")
            inside = run(c, "import forkpoint; forkpoint.checkpoint('in'); drawn = random.random()")
            drawn = value(c, "drawn")
            for _ in range(2):
                c.rewind(mark)
                assert value(c, "[random.random() for _ in range(5)]") == first
            c.rewind("in")
            assert value(c, "drawn") == drawn
            assert inside > mark
    finally:
        os.close(out)


def test_c_extension_objects_survive_rewind(controller: Controller) -> None:
    pytest.importorskip("cv2")
    mark = run(
        controller,
        """
        import cv2, numpy as np
        clahe = cv2.createCLAHE(clipLimit=3.5, tileGridSize=(4, 4))
        img = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
        expected = clahe.apply(img).sum()
        """,
    )
    run(controller, "clahe.setClipLimit(1.0); img[:] = 0")
    controller.rewind(mark)
    assert (
        value(controller, "(clahe.getClipLimit(), int(clahe.apply(img).sum()) == int(expected))")
        == "(3.5, True)"
    )


def test_checkpoint_from_user_code_continues_mid_input(controller: Controller, output: Path) -> None:
    run(
        controller,
        """
        import forkpoint
        seen = []
        for i in range(3):
            forkpoint.checkpoint(f"step{i}")
            seen.append(i)
            print("step", i, flush=True)
        """,
    )
    before = output.read_text()
    rewound = controller.rewind("step1")
    assert rewound.continued is not None and rewound.continued.status == "ok"
    assert value(controller, "seen") == "[0, 1, 2]"
    assert output.read_text()[len(before) :] == "step 1\nstep 2\n"


def test_checkpoint_is_a_no_op_outside_forkpoint() -> None:
    import forkpoint

    assert forkpoint.checkpoint("outside") is None


@pytest.mark.parametrize(
    "code, death",
    [
        ("import ctypes; ctypes.string_at(0)", "SIGSEGV (segmentation fault)"),
        ("import os; os._exit(3)", "exited with status 3"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGABRT)", "SIGABRT"),
    ],
)
def test_a_dying_head_is_replaced(controller: Controller, code: str, death: str) -> None:
    run(controller, "x = 41")
    result = controller.execute(code)
    assert result.status == "died" and result.rolled_back_to == 1
    assert result.death is not None and death in death_text(result.death)
    assert value(controller, "x + 1") == "42"


def test_head_killed_while_idle_is_noticed(controller: Controller) -> None:
    run(controller, "x = 5")
    assert controller.head_pid is not None
    os.kill(controller.head_pid, signal.SIGKILL)
    assert value(controller, "x") == "5"
    assert any("SIGKILL" in text for text in said(controller.events, HeadDied))


def test_interrupt_rolls_back(controller: Controller) -> None:
    run(controller, "x = 0")
    pid = controller.head_pid
    import threading

    timer = threading.Timer(0.5, lambda: os.kill(pid, signal.SIGINT) if pid else None)
    timer.start()
    result = controller.execute("x += 1\nimport time\nwhile True: time.sleep(0.01)")
    timer.join()
    assert result.status == "interrupted" and result.rolled_back_to == 1
    assert value(controller, "x") == "0"


def test_exit_reports_the_code(controller: Controller) -> None:
    result = controller.execute("raise SystemExit(4)")
    assert result.status == "exit" and result.exit_code == 4


def test_diff_names_what_changed(controller: Controller) -> None:
    a = run(controller, "import numpy as np; arr = np.zeros(10**6); n = 1; keep = 'same'; gone = 1")
    b = run(controller, "arr[123456] = 1; n = 2; new = [1]; del gone")
    changes = {c.name: c.kind for c in controller.diff(a, b)}
    assert changes == {"arr": "changed", "n": "changed", "new": "added", "gone": "removed"}


def test_completion_comes_from_the_live_namespace(controller: Controller) -> None:
    run(controller, "import json; my_variable = 1")
    assert "my_variable" in controller.complete("my_v")
    assert "json.dumps" in controller.complete("print(json.du")


def test_threads_are_named_once(controller: Controller) -> None:
    run(
        controller,
        "import threading, time\n"
        "t = threading.Thread(target=time.sleep, args=(30,), name='poller', daemon=True)\n"
        "t.start()",
    )
    run(controller, "x = 1")
    notices = said(controller.events)
    assert len(notices) == 1 and "poller" in notices[0]


def test_max_checkpoints_evicts_old_ones(tmp_path: Path) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null), max_checkpoints=10) as c:
            run(c, "x = 0")
            c.label("start")
            for _ in range(30):
                run(c, "x += 1")
            alive = c.view().alive()
            assert len(alive) <= 10
            assert c.find("start").alive
            c.rewind("start")
            assert value(c, "x") == "0"
            assert said(c.events, Evicted)
            evicted = next(n for n in c.view() if not n.alive)
            with pytest.raises(ForkpointError, match="evicted"):
                c.rewind(evicted.id)
    finally:
        os.close(null)


def test_memory_budget_evicts_big_checkpoints(tmp_path: Path) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null), memory_budget=150 << 20) as c:
            run(c, "import numpy as np; a = np.zeros(10**7)")  # 80 MB
            for i in range(5):
                run(c, f"a[:] = {i + 1}")  # each leaves 80 MB only in the checkpoint before
            report = c.memory()
            assert report.held <= (150 << 20) + (40 << 20), report
            assert said(c.events, Evicted)
    finally:
        os.close(null)


def test_the_budget_holds_when_every_input_dirties_10_mb(tmp_path: Path) -> None:
    """Issue 12's case: each input rewrites 10 MB, so each checkpoint holds a 10 MB version of
    its own; with a 300 MB budget, what live checkpoints hold (measured here, not by the
    pool) stays under it at every input, and the newest checkpoints are the ones kept."""
    budget = 300 << 20
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null), memory_budget=budget) as c:
            run(c, "import numpy as np; a = np.ones(10 * 2**20 // 8)")
            worst = 0
            for i in range(70):
                run(c, f"a[:] = {i + 2}")
                alive = [n for n in c.view().nodes.values() if n.alive]
                held = sum(m.held for n in alive if (m := memory.measure(n.pid)) is not None)
                worst = max(worst, held)
            assert worst <= budget, f"{worst >> 20} MB held against a {budget >> 20} MB budget"
            assert worst >= budget * 0.6, f"only {worst >> 20} MB kept: the budget is not used"
            assert said(c.events, Evicted)
            kept = sorted(n.id for n in c.view().nodes.values() if n.alive)
            assert kept[-10:] == list(range(kept[-1] - 9, kept[-1] + 1)), kept  # the recent ones, dense
    finally:
        os.close(null)


def test_a_foreign_or_garbled_connection_does_not_disturb(controller: Controller) -> None:
    run(controller, "x = 1")
    for payload in (b"", b"\x00\x00\x00\x05hello", b'\x00\x00\x00\x0f{"op":"hello"}'):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(controller.socket_path)
        s.sendall(payload)
        s.close()
    assert value(controller, "x") == "1"
    assert run(controller, "x = 2") == 2


def test_runtime_dir_is_private(controller: Controller) -> None:
    rundir = os.path.dirname(controller.socket_path)
    assert os.stat(rundir).st_mode & 0o777 == 0o700
    assert os.stat(os.path.dirname(rundir)).st_mode & 0o777 == 0o700


def test_close_leaves_nothing(output: Path) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    c = Controller(stdio=(null, null, null))
    c.start()
    run(
        c,
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])",
    )
    for _ in range(3):
        run(c, "x = 1")
    pids = [n.pid for n in c.view().alive()] + [c.head_pid]
    rundir = os.path.dirname(c.socket_path)
    c.close()
    os.close(null)
    assert not os.path.exists(rundir)
    for pid in pids:
        assert pid is not None and not is_alive(pid)
    # the leak fixture checks that the head's own child process is gone too


def test_a_head_dying_mid_message_is_replaced(controller: Controller) -> None:
    run(controller, "x = 7")
    result = controller.execute(
        "import os, forkpoint.agent.snapshot as s\n"
        's.channel().sock.sendall(b\'\\x00\\x00\\x01\\x00{"op": "res\')\n'
        "os._exit(1)"
    )
    assert result.status == "died" and result.rolled_back_to == 1
    assert value(controller, "x") == "7"


def test_a_hello_claiming_another_pid_is_refused(controller: Controller) -> None:
    from forkpoint.protocol import encode

    run(controller, "x = 1")
    head = controller.head_pid
    assert head is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(controller.socket_path)
        s.sendall(encode({"op": "hello", "role": "head", "pid": head, "version": 1, "origin": None}))
        s.settimeout(0.05)
        deadline = time.monotonic() + 10
        dropped = False
        while not dropped and time.monotonic() < deadline:
            assert value(controller, "x") == "1"  # the controller goes on working meanwhile
            try:
                dropped = s.recv(1) == b""
            except TimeoutError:
                continue
            except ConnectionResetError:
                dropped = True
        assert dropped  # the impostor is refused: the kernel says its pid is not the head's


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_other_users_cannot_reach_or_talk_to_the_controller(controller: Controller) -> None:
    import subprocess
    import sys

    rundir = os.path.dirname(controller.socket_path)
    # The child starts in a directory as root, then becomes nobody and connects by a relative
    # path, so only the permissions of the directories forkpoint made are tested.
    code = (
        "import os, socket, sys\n"
        "os.chdir(sys.argv[1]); os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[2])\n"
        "except PermissionError:\n"
        "    print('denied'); sys.exit(0)\n"
        "try:\n"  # the controller may drop it before the hello is even sent: a broken pipe
        "    s.sendall(b'\\x00\\x00\\x00\\x02{}'); s.settimeout(5)\n"
        "    print('dropped' if s.recv(1) == b'' else 'answered')\n"
        "except (ConnectionResetError, BrokenPipeError):\n"
        "    print('dropped')\n"
    )

    def as_nobody(start: str, path: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, start, path],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            assert value(controller, "1 + 1") == "2"  # the controller accepts while it works
        out, _ = proc.communicate(timeout=5)
        return out.strip()

    runtime_root = os.path.dirname(rundir)
    name = os.path.basename(rundir)
    assert as_nobody(runtime_root, f"{name}/control.sock") == "denied"  # the controller's dir is 0700
    # With that directory opened up by hand, the peer check still refuses another uid.
    os.chmod(rundir, 0o755)
    os.chmod(controller.socket_path, 0o777)
    try:
        assert as_nobody(rundir, "control.sock") == "dropped"
    finally:
        os.chmod(rundir, 0o700)
    assert any("refused a connection from uid 65534" in text for text in said(controller.events))


def test_the_head_imports_nothing_heavy(controller: Controller) -> None:
    loaded = value(controller, "sorted(__import__('sys').modules)")
    for heavy in ("prompt_toolkit", "psutil", "numpy", "forkpoint.controller", "forkpoint.shell", "pickle"):
        assert f"'{heavy}'" not in loaded


OTHER_PYTHONS = sorted(Path(os.path.expanduser("~/.pyenv/versions")).glob("3.1[123].*/bin/python3"))


@pytest.mark.skipif(not OTHER_PYTHONS, reason="no other interpreter on this machine")
@pytest.mark.parametrize("python", OTHER_PYTHONS, ids=lambda p: p.parent.parent.name)
def test_another_interpreter_runs_the_head(python: Path) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(python=str(python), stdio=(null, null, null)) as c:
            version = python.parent.parent.name
            assert value(c, "'.'.join(map(str, __import__('sys').version_info[:3]))") == repr(version)
            run(c, "x = 1")
            c.rewind(0)
            assert value(c, "'x' in globals()") == "False"
    finally:
        os.close(null)


def test_a_rewind_that_fails_keeps_the_head_the_user_had(controller: Controller) -> None:
    """The old head is killed only once the new one is up: a rewind to a checkpoint whose
    process died says why, and the head is the same process with the same state."""
    c = controller
    gone = c.execute("x = 1").checkpoint
    assert c.execute("x = 2").status == "ok"
    head = c.head_pid
    os.kill(c.view()[gone].pid, signal.SIGKILL)
    with pytest.raises(ForkpointError):
        c.rewind(gone)
    assert c.head_pid == head and is_alive(head or 0)
    assert c.evaluate("x") == (True, "2")
    assert c.execute("y = x + 1").status == "ok"
