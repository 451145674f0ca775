"""Saving a session with real CRIU, ending every process, and restoring it (issue: persistence).

A restore after every forkpoint process is gone is, for the saved process, a reboot. Each test
also runs under the leak check: no forkpoint or CRIU process outlives it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import processes_with, wait_until
from terminal import Terminal, command, env_for

from forkpoint.controller import Controller, SaveScope
from forkpoint.errors import ForkpointError
from forkpoint.persist import pages, store
from forkpoint.shell.commands import SaveRequest, parse_save

pytestmark = [pytest.mark.criu, pytest.mark.pty]
FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))

STATE = [
    "import numpy as np, cv2, random",
    "a = np.random.default_rng(1).random(10**6); clahe = cv2.createCLAHE(2.0)",
    "def f(x): return x * 2",
    "adder = (lambda k: lambda x: x + k)(100)  # a closure",
    "gen = (i * i for i in range(10)); next(gen); next(gen)",
    "log = open(__import__('tempfile').mktemp(), 'w+'); log.write('hello world'); log.seek(6)",
    "random.seed(7); state = {'n': 1}",
]
CHECK = "a.sum(), f(21), adder(1), clahe.getClipLimit(), next(gen), log.read(), random.random(), state"


@pytest.mark.parametrize("lazy", [[], ["--lazy"]], ids=["eager", "lazy"])
def test_save_quit_sessions_restore_in_a_terminal(tmp_path: Path, isolated: str, lazy: list[str]) -> None:
    env = env_for(tmp_path, isolated)
    t = Terminal(["shell"], env)
    try:
        t.wait_prompt()
        for line in STATE:
            t.run(line)
        current = t.current  # saved below: the state before CHECK reads the generator, file, random
        before = t.run(CHECK).strip()
        assert ", 42, 101, 2.0, 4, 'world', " in before and before.endswith("{'n': 1})")
        out = t.run(f":save nightly {current}")
        assert f'saved [{current}] and {current} checkpoints of its branch as "nightly": ' in out
        t.finish(":quit")
    finally:
        t.close()
    assert wait_until(lambda: not processes_with(isolated), timeout=3)  # the "reboot"

    listed = subprocess.run([FORKPOINT, "sessions"], env=env, capture_output=True, text=True, timeout=60)
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "SAVED", "SOURCE", "CHECKPOINTS", "SIZE"]
    assert row.split()[0] == "nightly" and row.split()[3] == "shell" and row.split()[4] == str(current + 1)

    t = Terminal(["restore", "nightly", *lazy], env)
    try:
        out = t.wait_prompt()
        assert 'restored "nightly" [' in out
        # lazily restored, the checkpoint's process became the head: the checkpoint is on disk;
        # the branch saved with it is on disk either way, until a rewind needs one
        listed = t.run(":checkpoints")
        row = next(line for line in listed.splitlines() if line.startswith("*"))
        assert ("on disk" in row) == bool(lazy)
        assert sum("on disk" in line for line in listed.splitlines()) >= current
        # the same values as before: the generator and the file go on from where they were
        assert t.run(CHECK).strip() == before
        t.run("state['n'] += 1")
        assert t.run(":rewind -1").strip().startswith("rewound to [")
        assert t.run("state").strip() == "{'n': 1}"
        # a restored process can be saved again, with the checkpoints still on disk linked
        assert 'as "again" (' in (said := t.run(":save again")) and ' linked from "nightly"): ' in said, said
        t.finish(":quit")
    finally:
        t.close()
    assert wait_until(lambda: not processes_with(isolated), timeout=3)


def test_a_session_restores_while_its_pids_are_taken(tmp_path: Path) -> None:
    with Controller() as c:
        c.execute("import os; x = [1, 2, 3]")
        c.save("twice")
    # The same session restored twice at once: the first copy holds every pid the saved
    # process had, so the second only works because each lives in a PID namespace of its own.
    out = os.open(tmp_path / "out.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with (
            Controller(restore="twice", stdio=(out, out, out)) as first,
            Controller(restore="twice", stdio=(out, out, out)) as second,
        ):
            assert first.evaluate("x") == (True, "[1, 2, 3]")
            assert second.evaluate("x.append(4) or x") == (True, "[1, 2, 3, 4]")
            assert first.evaluate("x") == (True, "[1, 2, 3]")
    finally:
        os.close(out)


def test_bad_sessions_say_so_and_others_still_restore(tmp_path: Path, isolated: str) -> None:
    with Controller() as c:
        c.execute("y = 'kept'")
        c.save("good")
        c.save("torn")
    pages = sorted((store.sessions_dir() / "torn" / "images").rglob("pages-*.img"))
    assert pages
    with open(pages[0], "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)  # a truncated image
    with (
        pytest.raises(
            ForkpointError, match=r"^session 'torn' is damaged: images/\d+/pages-\d+\.img was truncated"
        ),
        Controller(restore="torn"),
    ):
        pass
    done = subprocess.run(
        [FORKPOINT, "restore", "nope"], env=env_for(tmp_path, isolated), capture_output=True, text=True
    )
    assert done.returncode == 2 and "forkpoint: there is no session named 'nope'." in done.stderr
    with Controller(restore="good") as c:
        assert c.evaluate("y") == (True, "'kept'")


def _busy_restored(tmp_path: Path, isolated: str, lazy: list[str]) -> Terminal:
    """A session holding ``n = 1``, restored in a terminal whose head then counts forever."""
    with Controller() as c:
        c.execute("n = 1")
        c.save("busy")
    t = Terminal(["restore", "busy", *lazy], env_for(tmp_path, isolated))
    try:
        t.wait_prompt()
        t.child.send("while True: n += 1\r")
    except BaseException:
        t.close()
        raise
    return t


@pytest.mark.parametrize("lazy", [[], ["--lazy"]], ids=["eager", "lazy"])
def test_a_restored_session_takes_ctrl_c_and_input(tmp_path: Path, isolated: str, lazy: list[str]) -> None:
    """Lazily restored, the head is the restored process itself and the roll-back after
    Ctrl-C restores the checkpoint from disk again."""
    t = _busy_restored(tmp_path, isolated, lazy)
    try:
        time.sleep(0.5)  # running
        t.child.sendintr()  # the head is in another session: the controller passes Ctrl-C on
        out = t.wait_prompt()
        assert "KeyboardInterrupt" in out and "rolled back to [" in out
        assert t.run("n").strip() == "1"
        t.child.send("input('name? ')\r")
        t.child.expect("name\\? ")
        t.child.send("ada\r")
        assert "'ada'" in t.wait_prompt()
        t.finish(":quit")
    finally:
        t.close()
    assert wait_until(lambda: not processes_with(isolated), timeout=3)


@pytest.mark.parametrize("lazy", [[], ["--lazy"]], ids=["eager", "lazy"])
def test_a_killed_controller_takes_a_restored_session_with_it(
    tmp_path: Path, isolated: str, lazy: list[str]
) -> None:
    """SIGKILL of the forkpoint process while a restored head is busy: the namespace's init
    dies with its parent, and the kernel ends everything in the namespace."""
    t = _busy_restored(tmp_path, isolated, lazy)
    try:
        time.sleep(0.5)
        assert len(processes_with(isolated)) >= 3  # controller, the init, the head
        os.kill(t.pid, signal.SIGKILL)
        assert wait_until(lambda: not processes_with(isolated), timeout=3)
    finally:
        t.close()


def test_a_full_disk_during_save_leaves_nothing_behind(small_disk: Path) -> None:
    with Controller() as c:
        c.execute("z = 1")
        c.save("small", scope=SaveScope.ONLY)  # the interpreter alone fits
        c.execute("import numpy as np; big = np.arange(4 * 10**6, dtype=np.float64)")  # 32 MB
        with pytest.raises(ForkpointError, match=r"^CRIU could not save the process: "):
            c.save("big", scope=SaveScope.ONLY)
        assert c.evaluate("z") == (True, "1")  # the session goes on
    assert sorted(p.name for p in store.sessions_dir().iterdir()) == ["small"]
    with Controller(restore="small") as c:
        assert c.evaluate("z") == (True, "1")


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
def test_a_file_gone_or_changed_at_restore_is_named(tmp_path: Path, lazy: bool) -> None:
    """Named before CRIU runs (persist.needs), eagerly and lazily, and nothing restored stays
    behind (the leak check); put back as it was, the file lets the session restore."""
    kept = tmp_path / "kept.txt"
    kept.write_text("hello\n")
    with Controller() as c:
        c.execute(f"f = open({str(kept)!r}); f.read(2)")
        c.save("files")
    kept.unlink()
    said = "^session 'files' cannot be restored on this machine: a file it had open, "
    with pytest.raises(ForkpointError, match=rf"{said}{kept}, is not here\. "):
        Controller(restore="files", lazy=lazy).__enter__()
    kept.write_text("changed since\n")
    with pytest.raises(ForkpointError, match=rf"{said}{kept}, is 14 bytes here, and was 6 bytes\. "):
        Controller(restore="files", lazy=lazy).__enter__()
    kept.write_text("hello\n")
    with Controller(restore="files", lazy=lazy) as c:
        assert c.evaluate("f.read()") == (True, "'llo\\n'")


def test_run_on_error_save_then_resume_after_an_edit(tmp_path: Path, isolated: str) -> None:
    programs = Path(__file__).parent / "programs"
    script = tmp_path / "batch.py"
    script.write_text((programs / "batch.py").read_text())
    env = env_for(tmp_path, isolated)

    def forkpoint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FORKPOINT, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    done = forkpoint(
        "run",
        "batch.py",
        "--checkpoint-at",
        "process",
        "--checkpoint-every-hit",
        "--on-error",
        "save",
        "--session",
        "b",
        "--",
        "6",
    )
    assert done.returncode == 1 and "IndexError" in done.stderr
    assert 'saved the failure as session "b": ' in done.stderr and "forkpoint resume b" in done.stderr
    assert wait_until(lambda: not processes_with(isolated), timeout=3)  # nothing runs until resume
    row = forkpoint("sessions").stdout.splitlines()[1].split()
    assert row[0] == "b" and row[3:5] == ["run", "batch.py"]

    script.write_text((programs / "batch_fixed.py").read_text())
    done = forkpoint("resume", "b")
    assert done.returncode == 0, done.stdout + done.stderr
    # forkpoint's sentences on stderr; stdout is the program's
    assert "resuming from [" in done.stderr and "the entry of call 4 of process()" in done.stderr
    fresh = subprocess.run([sys.executable, str(script), "6"], capture_output=True, text=True).stdout
    expected = fresh[fresh.index("done 4") :]
    for i in (1, 2, 3):  # calls 1-3 ran the old code before the save, as forkpoint says
        expected = expected.replace(f"'video{i}.mp4:", "'video{}.mp4:")
    assert done.stdout.endswith(expected)
    assert "calls 1-3 of process() in this statement ran the old code" in done.stderr


def test_a_resume_that_fails_again_saves_again_with_its_history(tmp_path: Path, isolated: str) -> None:
    """``resume --on-error save``, as a batch job retried on another node would run it: the
    second failure is saved under a free name, its checkpoints linked from the first session,
    and resumes on its own once the cause is fixed."""
    (tmp_path / "job.py").write_text("x = 1\ny = x + 1\nz = y / int(open('d').read())\nprint('z', z)\n")
    (tmp_path / "d").write_text("0")
    run = ["run", "job.py", "--on-error", "save", "--session", "job"]
    done = command(tmp_path, isolated, FORKPOINT, *run, timeout=120)
    assert done.returncode == 1 and 'saved the failure as session "job"' in done.stderr, done.stderr
    first, _ = store.load("job")
    done = command(tmp_path, isolated, FORKPOINT, "resume", "job", "--on-error", "save", timeout=120)
    assert done.returncode == 1 and "ZeroDivisionError" in done.stderr, done.stderr
    assert 'saved the failure as session "job-2"' in done.stderr, done.stderr
    again, _ = store.load("job-2")
    assert again.kept == first.kept == [1, 2], (first.kept, again.kept)
    assert _inodes("job-2") == _inodes("job")  # nothing dumped again: the same files, linked
    assert command(tmp_path, isolated, FORKPOINT, "rm", "job").returncode == 0
    (tmp_path / "d").write_text("2")
    done = command(tmp_path, isolated, FORKPOINT, "resume", "job-2", timeout=120)
    assert done.returncode == 0 and done.stdout == "z 1.0\n", done.stdout + done.stderr


ARRAYS = """\
import numpy as np
a = np.random.default_rng(1).random((32 << 20) // 8)
a[:1000] += 1
b = a[::4096].copy()
a[100000:101000] = 3
c = float(a.sum())
print("c", c, b[-3:].tolist())
print("at", float(a[{at}]), float(a[100500]))
"""


def test_a_script_sessions_checkpoints_share_pages_on_disk(tmp_path: Path, isolated: str) -> None:
    """Seven checkpoints of a 32 MB array take little more than one on disk, and each
    still restores whole. The latest is written whole (resume goes on from it, reading no
    link) and each earlier one reads what it shares from the next one after it."""
    (tmp_path / "arrays.py").write_text(ARRAYS.format(at="10**9"))
    env = env_for(tmp_path, isolated)
    run = [FORKPOINT, "run", "arrays.py", "--on-error", "save", "--session", "arr"]
    done = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "IndexError" in done.stderr, done.stderr
    session, folder = store.load("arr")
    dumps = sorted(int(p.name) for p in (folder / "images").iterdir())
    assert len(dumps) == len(session.kept) >= 6
    for earlier, later in itertools.pairwise(dumps):
        assert os.readlink(folder / "images" / str(earlier) / "parent") == f"../{later}"
    assert not (folder / "images" / str(dumps[-1]) / "parent").exists()
    latest = store.size_of(folder / "images" / str(dumps[-1]))  # numpy and the array
    assert latest > 32 << 20
    assert store.size_of(folder / "images") < latest + (16 << 20)  # each whole: over 5x the array

    (tmp_path / "arrays.py").write_text(ARRAYS.format(at="10**6"))
    fresh = subprocess.run([sys.executable, "arrays.py"], cwd=tmp_path, capture_output=True, text=True)
    for lazy in ([], ["--lazy"]):  # pages read through the links by CRIU, then by its lazy-pages daemon
        resume = [FORKPOINT, "resume", "arr", *lazy]
        done = subprocess.run(resume, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"resuming from [{max(dumps)}]" in done.stderr
        assert done.stdout.endswith(fresh.stdout.splitlines()[-1] + "\n")

    link = folder / "images" / str(dumps[0]) / "parent"
    link.unlink()
    link.symlink_to("../../../elsewhere")
    with pytest.raises(
        ForkpointError, match=rf"session 'arr' is damaged: images/{dumps[0]}/parent was changed"
    ):
        store.check_images("arr", folder / "images", session.images)


def test_a_save_reports_its_progress() -> None:
    """While CRIU writes, the front end is told how far it got (asked here every 5 ms, so
    that a 256 MB save, a fraction of a second, is seen in several steps)."""
    from forkpoint.controller import SaveProgress

    seen: list[SaveProgress] = []
    with Controller() as c:
        c.execute("import numpy as np; a = np.ones((256 << 20) // 8)")
        saved = c.save("big", progress=seen.append, progress_every=0.005, scope=SaveScope.ONLY)
    assert len(seen) >= 3
    assert all(p.checkpoint == saved.checkpoint and (p.index, p.count) == (1, 1) for p in seen)
    assert all(p.expected > 256 << 20 for p in seen)
    written = [p.written for p in seen]
    assert written == sorted(written) and written[-1] > 0


def test_the_progress_line_is_rewritten_in_place_and_cleared() -> None:
    import io

    from forkpoint.controller import SaveProgress
    from forkpoint.shell.render import Renderer

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    render = Renderer(out, out)
    render.color = False
    render.progress(SaveProgress(3, 2, 8, 412_000_000, 801_000_000))
    render.progress(SaveProgress(3, 2, 8, 700_000_000, 801_000_000))
    render.line("saved")
    assert out.getvalue() == (
        "\r\x1b[Ksaving [3] (2 of 8): 412.0 MB of 801.0 MB"
        "\r\x1b[Ksaving [3] (2 of 8): 700.0 MB of 801.0 MB"
        "\r\x1b[Ksaved\n"
    )


def test_a_rewind_to_a_checkpoint_the_session_did_not_save_says_so(tmp_path: Path, isolated: str) -> None:
    """A shell session saved at [3] with --only keeps [3] alone: after its restore, [1] is in the tree but
    was never saved, and a rewind to it says that (it used to say "evicted to stay within the
    memory budget", wrong twice), names what the session holds, and changes nothing."""
    with Controller() as c:
        for i in range(3):
            c.execute(f"x = {i}")
        c.save("one", scope=SaveScope.ONLY)
    with Controller(restore="one") as c:
        with pytest.raises(ForkpointError) as caught:
            c.rewind(1)
        assert caught.value.message == "checkpoint [1] was not saved with this session; it holds [3]."
        assert c.evaluate("x") == (True, "2")
        assert c.view().nodes[1].state.value == "not saved"
        with pytest.raises(
            ForkpointError, match="^session 'one' is the one this forkpoint was restored from"
        ):
            c.save("one", replace=True)
        assert c.save("two").kept == [3]


def _inodes(name: str) -> dict[str, int]:
    _, folder = store.load(name)
    return {str(p.relative_to(folder)): p.stat().st_ino for p in (folder / "images").rglob("*.img")}


def test_a_shell_session_keeps_its_branch_and_a_save_again_writes_only_what_is_new(
    tmp_path: Path, isolated: str
) -> None:
    """Issue 15: :save keeps the branch, so after a restore a rewind to an earlier checkpoint
    works (restored on demand) and gives the state it had; saving the session again after
    more inputs hard-links what its last save wrote (the same files, not written again) and
    dumps only the new checkpoints."""
    with Controller() as c:
        c.execute("import numpy as np; a = np.zeros(2**20); x = 0")
        for i in range(1, 4):
            c.execute(f"a[:] = {i}; x = {i}")  # [2]..[4]
        first = c.save("branch")
        assert first.kept == [0, 1, 2, 3, 4] and first.checkpoint == 4 and first.carried == []
        before = _inodes("branch")
        for i in range(4, 6):
            c.execute(f"a[:] = {i}; x = {i}")  # [5], [6]
        again = c.save("branch", replace=True)
        assert again.carried == [0, 1, 2, 3, 4] and again.kept == [0, 1, 2, 3, 4, 5, 6]
        after = _inodes("branch")
        assert {k: after[k] for k in before} == before  # the first save's files, linked
        new = set(after) - set(before)
        assert new and {k.split("/")[1] for k in new} == {"5", "6"}  # only the new ones dumped
        same = c.save("branch", replace=True)  # no input since: nothing to dump (it once dumped [6] twice)
        assert same.carried == same.kept == again.kept and _inodes("branch") == after
    with Controller(restore="branch") as c:
        assert c.evaluate("x") == (True, "5")
        shown = {n.id: n.state.value for n in c.checkpoints()}
        assert shown[6] == "restored" and {shown[i] for i in range(6)} == {"on disk"}
        c.rewind(3)
        assert c.evaluate("(x, float(a[0]))") == (True, "(2, 2.0)")
        c.rewind(5)
        assert c.evaluate("(x, float(a[-1]))") == (True, "(4, 4.0)")


def test_a_restored_session_saved_under_another_name_keeps_its_history(tmp_path: Path, isolated: str) -> None:
    """Its checkpoints on disk are not alive to be dumped: their images are linked from the
    session it was restored from, and the new session restores to any of them."""
    with Controller() as c:
        c.execute("x = 0")
        for i in range(1, 4):
            c.execute(f"x = {i}")  # [2]..[4]
        c.save("old")
    with Controller(restore="old") as c:
        c.execute("x = 10")  # [5]
        saved = c.save("new")
        assert saved.carried and set(saved.carried) <= {0, 1, 2, 3, 4}, saved
        assert {2, 3, 5} <= set(saved.kept), saved
    assert command(tmp_path, isolated, FORKPOINT, "rm", "old").returncode == 0
    with Controller(restore="new") as c:
        assert c.evaluate("x") == (True, "10")
        c.rewind(3)
        assert c.evaluate("x") == (True, "2")


def test_a_save_keeps_what_it_is_told_and_what_the_disk_budget_allows(tmp_path: Path, isolated: str) -> None:
    """--only keeps the checkpoint alone, --all every one of its branch; a disk budget keeps
    the checkpoint and labelled ones always and the rest nearest first while it allows."""
    with Controller() as c:
        c.execute("import numpy as np; a = np.zeros(2**20)")
        c.execute("a[:] = 1")
        c.label("one")  # [2]
        for i in range(2, 7):
            c.execute(f"a[:] = {i}")  # [3]..[7], each 8 MB of its own
        only = c.save("only", scope=SaveScope.ONLY)
        whole = c.save("whole", scope=SaveScope.ALL)
        assert only.kept == [7] and whole.kept == list(range(8))
        budget = only.size + 3 * (8 << 20) + (4 << 20)
        some = c.save("some", disk_budget=budget)
        assert some.size <= budget, (some.size, budget)
        assert 7 in some.kept and 2 in some.kept and 2 < len(some.kept) < len(whole.kept)
        assert max(set(range(8)) - set(some.kept)) < min(set(some.kept) - {2})  # nearest first
        c.execute("a[:] = 9")  # [8]
        again = c.save("some", replace=True)  # its last save left some out: the rest still carry
        assert again.carried == some.kept and again.kept == list(range(9))
    assert parse_save(["s", "3", "--disk", "2G", "--only"], ":save") == SaveRequest(
        "s", "3", False, SaveScope.ONLY, 2 << 30
    )
    for words, said in (
        (["s", "--all", "--only"], ":save takes --all or --only, not both."),
        (["s", "--disk"], ":save --disk needs a size."),
        (["s", "--al"], ":save has no option --al."),
    ):
        with pytest.raises(ForkpointError) as caught:
            parse_save(words, ":save")
        assert caught.value.message == said


def test_a_disk_budget_counts_the_sessions_record(tmp_path: Path, isolated: str) -> None:
    """meta.json, which keeps every input's source, counts against the budget: here the 12 MB
    source of one input would let a third checkpoint's images in if only images counted."""
    with Controller() as c:
        c.execute("import numpy as np; a = np.zeros(2**20)")
        c.execute("n = 0  # " + "x" * (12 << 20))
        for i in range(1, 7):
            c.execute(f"a[:] = {i}")  # [3]..[8], each 8 MB of its own
        only = c.save("only", scope=SaveScope.ONLY)
        budget = only.size + 2 * (8 << 20) + (5 << 20)
        some = c.save("some", disk_budget=budget)
        record = (tmp_path / "data" / "forkpoint" / "sessions" / "some" / "meta.json").stat().st_size
        assert record > 12 << 20 and some.size <= budget, (record, some.size, budget)
        assert some.kept == [6, 7, 8], some.kept


def test_a_lazy_restore_gives_back_the_same_state(tmp_path: Path) -> None:
    """With --lazy, CRIU's lazy-pages daemon fills the memory as it is touched; the state is
    the same, a restored session works as a live one, and the daemon ends with the tool. The
    restored process becomes the head (no fork, so the daemon fills one copy), and a rewind
    to the saved checkpoint restores it again."""
    with Controller() as c:
        for line in STATE:
            c.execute(line)
        c.execute("b = np.random.default_rng(3).random((64 << 20) // 8); total = float(b.sum())")
        expected = c.evaluate(CHECK)
        c.save("lazy")
    # Its memory is marked lazy (CRIU's own marking misses it when the candidate's stack
    # pointer is page-aligned), in entries CRIU's lazy-pages daemon can take.
    session, folder = store.load("lazy")
    images = folder / "images" / str(session.checkpoint)
    lazy = [(n, f) for p in pages.task_pagemaps(images) for _, n, f in pages.read_pagemap(p).entries]
    assert sum(n for n, f in lazy if f & pages.PE_LAZY) * pages.PAGE > 64 << 20
    assert max(n for n, _ in lazy) <= pages.MAX_RUN
    out = os.open(tmp_path / "out.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with Controller(restore="lazy", lazy=True, stdio=(out, out, out)) as c:
            assert c.evaluate("float(b.sum()) == total") == (True, "True")
            assert c.evaluate(CHECK) == expected
            mark = c.execute("b[:] = 0").checkpoint
            assert mark is not None
            c.rewind(mark - 1)
            assert c.evaluate("float(b.sum()) == total") == (True, "True")
    finally:
        os.close(out)


def test_a_script_sessions_checkpoints_come_back_only_when_needed(tmp_path: Path, isolated: str) -> None:
    """Restored processes share no pages, so a script session restores a checkpoint when
    resume (or a rewind) needs it, not all of them up front."""
    (tmp_path / "arrays.py").write_text(ARRAYS.format(at="10**9"))
    run = [FORKPOINT, "run", "arrays.py", "--on-error", "save", "--session", "some"]
    env = env_for(tmp_path, isolated)
    done = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    session, _ = store.load("some")
    (tmp_path / "arrays.py").write_text(ARRAYS.format(at="10**6"))
    out = os.open(tmp_path / "out.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with Controller(restore="some", stdio=(out, out, out)) as c:
            assert c.view().alive() == [] and all(c.view()[cid].stored for cid in session.kept)
            resumed = c.resume()
            assert resumed.checkpoint == session.checkpoint
            assert (resumed.result.status, resumed.result.exit_code) == ("exit", 0)
            assert [n.id for n in c.view().alive()] == [session.checkpoint]
            c.rewind(min(session.kept) + 2)  # after `a[:1000] += 1`: the array, before the rest
            assert c.evaluate("1 <= float(a[0]) < 2, float(a[100500]) != 3") == (True, "(True, True)")
            assert len(c.view().alive()) == 2
    finally:
        os.close(out)
