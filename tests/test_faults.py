"""Faults a hostile but realistic user makes: Ctrl-C in the middle of a command, a question a
checkpoint is slow to answer, a command that meets a bug. Each cancels or reports that one
thing and the session goes on, its checkpoints all there."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect
import psutil
import pytest
from conftest import processes_with
from terminal import FRESH_PROMPT, Terminal, clean, command, env_for

from forkpoint import paths
from forkpoint.controller import Controller, SaveScope
from forkpoint.persist import store

pytestmark = pytest.mark.pty
FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))

SLOW_REPR = (
    "class Slow:\n"
    "    def __repr__(self):\n"
    "        import time\n"
    "        time.sleep(3)\n"
    "        return f'made at {time.time():.3f}'\n"
)


def _interrupt_when(t: Terminal, shown: str) -> str:
    t.wait_screen(shown)
    t.child.sendintr()
    return t.wait_prompt()


def test_ctrl_c_in_a_post_mortem_input_stops_that_input_only(tmp_path: Path, isolated: str) -> None:
    script = tmp_path / "s.py"
    script.write_text("x = 41\nraise ValueError('boom')\n")
    t = Terminal(["run", str(script)], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.child.send("import time; print('sle' + 'eping', flush=True); time.sleep(60)\r")
        out = _interrupt_when(t, "sleeping")  # the output, not the echo of the typed line
        assert "KeyboardInterrupt" in out
        assert t.run("x + 1").strip() == "42"  # the same post-mortem, its answers in order
        script.write_text("x = 41\nprint('fixed', x)\n")
        text = t.finish("resume")
        assert "fixed 41" in text and t.child.exitstatus == 0
    finally:
        t.close()


def test_ctrl_c_in_a_slow_diff_keeps_every_checkpoint(tmp_path: Path, isolated: str) -> None:
    """A value whose repr takes 3 s: :diff is cancelled, the checkpoint it asked is kept, and
    the next question to it gets its own answer, not the one given up on (which the
    checkpoint sent meanwhile)."""
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.paste(SLOW_REPR)  # [1]
        t.run("s = Slow()")  # [2]
        t.run("n = 2")  # [3]
        t.child.send(":diff 1 2\r")
        time.sleep(1.0)  # the probe is in the slow repr by now
        t.child.sendintr()
        out = t.wait_prompt()
        assert "interrupted; the session goes on." in out
        assert t.run("n").strip() == "2"
        listing = t.run(":checkpoints")
        ids = {int(line.replace("*", " ").split()[0]) for line in listing.splitlines()[1:] if line.strip()}
        assert {1, 2, 3} <= ids, listing
        time.sleep(3.0)  # the abandoned answer is on its way by now
        asked = time.time()
        diff = t.run(":diff 1 2", timeout=20)
        made = [float(w) for w in diff.replace("'", " ").split() if w.replace(".", "").isdigit()]
        assert made and made[0] > asked, diff  # this question's answer, made after it was asked
        assert "rewound to [2]" in t.run(":rewind 2")
        assert "NameError: name 'n' is not defined" in t.run("n")
    finally:
        t.close()


@pytest.mark.criu
def test_ctrl_c_during_a_save_leaves_nothing_and_the_session_goes_on(tmp_path: Path, isolated: str) -> None:
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    sessions = tmp_path / "data" / "forkpoint" / "sessions"
    try:
        t.wait_prompt()
        t.run("import numpy as np; a = np.arange(60_000_000, dtype=np.float64)")  # 480 MB to dump
        t.child.send(":save big\r")
        out = _interrupt_when(t, "saving")
        assert "interrupted; the session goes on." in out
        assert not sessions.exists() or not os.listdir(sessions), os.listdir(sessions)
        assert t.run("float(a[-1])").strip() == "59999999.0"
        assert "no saved sessions" in t.run(":sessions")
        assert not [pid for pid in processes_with(isolated) if _runs_criu(pid)]
    finally:
        t.close()
        shutil.rmtree(sessions, ignore_errors=True)


def _runs_criu(pid: int) -> bool:
    """The CRIU make install unpacks runs under its own ld.so (comm ld-linux-x86-64), so the
    binary is found among the first arguments, not in comm."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(arg) == b"criu" for arg in argv[:4])


@pytest.mark.criu
def test_a_controller_killed_mid_save_leaves_nothing_once_forkpoint_runs_again(
    tmp_path: Path, isolated: str
) -> None:
    """kill -9 of the controller while CRIU dumps: the processes it started end (the copy
    waiting to be dumped sees its controller gone), and the next forkpoint command removes
    the partial save and the runtime dir (the isolated fixture checks both)."""
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    sessions = tmp_path / "data" / "forkpoint" / "sessions"
    try:
        t.wait_prompt()
        t.run("import numpy as np; a = np.arange(150_000_000, dtype=np.float64)")  # 1.2 GB to dump
        t.child.send(":save big\r")
        t.wait_screen("saving")
        os.kill(t.pid, signal.SIGKILL)
        t.child.wait()  # reaped, as a shell reaps what it started
        left = sorted(p.name for p in sessions.iterdir())  # killed mid-save: its build, its lock
        assert left == [f".big.saving-{t.pid}", ".big.writer.lock"], left
        listed = command(tmp_path, isolated, FORKPOINT, "sessions")
        assert "no saved sessions" in listed.stdout, listed
        assert not list(sessions.iterdir())
        runtime = Path(paths.runtime_root())  # the test's own (isolated), or /tmp's when too long
        assert not [p for p in runtime.iterdir() if p.name.startswith(f"{t.pid}-")]
    finally:
        t.close()


@pytest.mark.criu
def test_a_save_never_replaces_a_session_without_being_told(tmp_path: Path, isolated: str) -> None:
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.run("x = 'first'")
        assert 'as "s1"' in t.run(":save s1", timeout=60)
        t.run("x = 'second'")
        refused = t.run(":save s1", timeout=60)
        assert 'there is a saved session named "s1" already.' in refused and "--force" in refused
        assert 'as "s1"' in t.run(":save s1 --force", timeout=60)
    finally:
        t.close()
    script = tmp_path / "s.py"
    script.write_text("x = 1\nraise ValueError('boom')\n")
    for expected in ('"fail"', '"fail-2"'):  # run --on-error save picks a new name instead
        done = command(
            tmp_path, isolated, FORKPOINT, "run", str(script), "--on-error", "save", "--session", "fail"
        )
        assert f"saved the failure as session {expected}" in done.stderr, done.stderr
    listed = command(tmp_path, isolated, FORKPOINT, "sessions").stdout
    assert all(name in listed for name in ("s1", "fail", "fail-2")), listed


def test_a_runtime_dir_another_user_made_first_is_refused_not_used(tmp_path: Path, isolated: str) -> None:
    """Another local user creates $TMPDIR/forkpoint-UID before us (to deny service): forkpoint
    says so in one sentence, uses a fresh private dir, and removes it when done."""
    tmp = Path(tempfile.mkdtemp(prefix="fp-", dir="/tmp"))  # short: socket paths live below it
    try:
        squatted = tmp / f"forkpoint-{os.getuid()}"
        squatted.mkdir()
        os.chown(squatted, 65534, 65534)
        os.chmod(tmp, 0o1777)
        script = tmp_path / "s.py"
        script.write_text("print('ran')\n")
        env = {**env_for(tmp_path, isolated), "XDG_RUNTIME_DIR": "", "TMPDIR": str(tmp)}
        done = subprocess.run(
            [FORKPOINT, "run", str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0 and done.stdout == "ran\n", done.stderr
        said = f"forkpoint: {squatted} is not this user's private dir; using {tmp}/forkpoint-{os.getuid()}-"
        assert said in done.stderr, done.stderr
        assert sorted(p.name for p in tmp.iterdir()) == [squatted.name]  # the fresh one is gone
        assert not list(squatted.iterdir())
    finally:
        shutil.rmtree(tmp)


def test_an_idle_connection_to_the_socket_stalls_nothing(tmp_path: Path, isolated: str) -> None:
    """A process of the same user connects to the control socket and says nothing: inputs go
    on at once (the hello is awaited alongside them), and the connection is dropped after 5 s
    (at the first input after that: between inputs the controller waits for the terminal)."""
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        t.wait_prompt()
        (path,) = Path(paths.runtime_root()).glob(f"{t.pid}-*/control.sock")
        idle.connect(str(path))
        for n in range(3):  # before the fix, the first of these waited 5 s for the hello
            assert t.run(f"{n} + 40", timeout=2).strip() == str(n + 40)
        time.sleep(5.5)
        t.run("pass")  # the controller looks at its connections while it waits for an input
        idle.settimeout(10)
        assert idle.recv(1) == b""  # dropped: EOF
    finally:
        idle.close()
        t.close()


def test_small_promises_history_owner_and_long_names(tmp_path: Path, isolated: str) -> None:
    """The history file is 0600 under umask 0; a 10,000-character name is not echoed whole;
    a label has a length limit, said in one sentence; rm leaves another user's session."""
    old = os.umask(0)
    try:
        t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    finally:
        os.umask(old)
    try:
        t.wait_prompt()
        t.run("x = 1")
        history = tmp_path / "state" / "forkpoint" / "history"
        assert stat.S_IMODE(history.stat().st_mode) == 0o600
        said = t.run(":rewind " + "y" * 10_000).rstrip().splitlines()[-1]  # after the typed line
        assert said.startswith("forkpoint: no checkpoint is labelled") and len(said) < 200, said
        assert "a label is at most 80 characters; this one has 100." in t.run(":label " + "z" * 100)
    finally:
        t.close()
    theirs = tmp_path / "data" / "forkpoint" / "sessions" / "theirs"
    theirs.mkdir(parents=True)
    (theirs / "meta.json").write_text("{}")
    os.chown(theirs, 65534, 65534)
    done = command(tmp_path, isolated, FORKPOINT, "rm", "theirs")
    assert done.returncode == 2 and "belongs to another user (uid 65534)" in done.stderr, done.stderr
    assert (theirs / "meta.json").exists()


def _restore(tmp_path: Path, isolated: str, name: str, *more: str) -> subprocess.CompletedProcess[str]:
    return command(tmp_path, isolated, FORKPOINT, "restore", name, *more, timeout=30)


@pytest.mark.criu
@pytest.mark.parametrize("lazy", [[], ["--lazy"]], ids=["eager", "lazy"])
def test_a_flipped_byte_in_a_pages_image_is_refused(tmp_path: Path, isolated: str, lazy: list[str]) -> None:
    with Controller() as c:
        c.execute("import numpy as np; a = np.arange(4_000_000, dtype=np.int64)")
        c.save("flipped")
    (pages,) = sorted((store.sessions_dir() / "flipped" / "images").rglob("pages-*.img"))[-1:]
    with open(pages, "r+b") as f:
        f.seek(pages.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    if not lazy:
        done = _restore(tmp_path, isolated, "flipped")
        assert done.returncode == 2, done.stdout
        said = done.stderr
    else:  # ready at once, its pages checked behind it: the first use says so, nothing is used
        t = Terminal(["restore", "flipped", "--lazy"], env_for(tmp_path, isolated), cwd=str(tmp_path))
        try:
            t.wait_prompt()
            said = t.run("int(a[-1])")
            assert "Nothing the restored process holds was used." in said and "3999999" not in said, said
        finally:
            t.close()
    assert re.search(
        r"session 'flipped' is damaged: images/\d+/pages-\d+\.img is not what was saved", said
    ), said


BAD_META = {
    "tree: 5": {"tree": 5},
    "tree: [5]": {"tree": [5]},
    "images of text": {"images": {"f": "abc"}},
    "kept: [99]": {"kept": [99]},
    "checkpoint: true": {"checkpoint": True},
    "script path 1": {"script": {"path": 1}},
    "secret: 5": {"secret": 5},
    "saved: 1e300": {"saved": 1e300},
    "a path out": {"images": {"../../../etc/shadow": [1, None]}},
}


@pytest.mark.criu
def test_a_meta_json_of_wrong_types_is_one_sentence(tmp_path: Path, isolated: str) -> None:
    """Each damage of the issue's list: `restore` says "damaged" in one sentence at once (no
    traceback, no wait for a process), `sessions` lists it as damaged, the good one restores."""
    with Controller() as c:
        c.execute("y = 'kept'")
        c.save("good")
    good = store.sessions_dir() / "good"
    meta = json.loads((good / "meta.json").read_text())
    for i, change in enumerate(BAD_META.values()):
        bad = store.sessions_dir() / f"bad{i}"
        shutil.copytree(good, bad, symlinks=True)
        (bad / "meta.json").write_text(json.dumps({**meta, **change}))
    for i, what in enumerate(BAD_META):
        done = _restore(tmp_path, isolated, f"bad{i}")
        lines = done.stderr.strip().splitlines()
        assert (
            done.returncode == 2 and lines and lines[0].startswith(f"forkpoint: session 'bad{i}' is damaged")
        ), (
            what,
            done.stderr,
        )
        assert "Traceback" not in done.stderr and len(lines) <= 2, (what, done.stderr)
    listed = command(tmp_path, isolated, FORKPOINT, "sessions")
    assert listed.returncode == 0 and listed.stdout.count("(damaged)") == len(BAD_META), listed.stdout
    with Controller(restore="good") as c:
        assert c.evaluate("y") == (True, "'kept'")


def test_links_in_the_store_are_never_followed(tmp_path: Path, isolated: str) -> None:
    sessions = store.sessions_dir()
    (sessions / "root").symlink_to("/")
    listed = command(tmp_path, isolated, FORKPOINT, "sessions", timeout=20)
    assert listed.returncode == 0 and "no saved sessions" in listed.stdout, listed
    for verb in ("rm", "restore"):
        done = command(tmp_path, isolated, FORKPOINT, verb, "root", timeout=20)
        assert done.returncode == 2, done
        assert "forkpoint: 'root' is not a session (a link in the store" in done.stderr, done.stderr
    assert (sessions / "root").is_symlink() and os.path.isdir("/etc")


@pytest.mark.criu
def test_a_session_in_use_says_so_at_once_and_a_renamed_one_restores(tmp_path: Path, isolated: str) -> None:
    """Two restores of one session at once give two independent copies (the restores take
    turns with the session's attach file); an rm of a session a forkpoint has restored is
    refused in one sentence and the restored copy goes on; a session dir renamed after its save
    restores as well (its processes look for their controller by its secret, not its name)."""
    with Controller() as c:
        c.execute("y = ['kept']")
        c.save("s")
    first = Terminal(["restore", "s", "--lazy"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    second = Terminal(["restore", "s"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        first.wait_prompt()
        second.wait_prompt()
        assert first.run("y.append('first') or y").strip() == "['kept', 'first']"
        assert second.run("y").strip() == "['kept']"  # a copy of its own
        removed = command(tmp_path, isolated, FORKPOINT, "rm", "s")
        assert removed.returncode == 2 and "session 's' is in use" in removed.stderr, removed.stderr
        assert first.run(":rewind 1").strip().startswith("rewound to [1]")  # its images all there
        assert first.run("y").strip() == "['kept']"
    finally:
        first.close()
        second.close()
    (store.sessions_dir() / "s").rename(store.sessions_dir() / "renamed")
    moved = Terminal(["restore", "renamed"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        moved.wait_prompt()  # its processes find their controller whatever the session is called
        assert moved.run("y").strip() == "['kept']"
    finally:
        moved.close()
    assert command(tmp_path, isolated, FORKPOINT, "rm", "renamed").returncode == 0


def test_a_bare_fork_in_an_input_leaves_one_head(tmp_path: Path, isolated: str) -> None:
    """The child of a bare os.fork() in an input ends with that input (it does not answer the
    next ones in turn with the head), and the head's death is still seen."""
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.run("import os; p = os.fork()")
        answers = [t.run("p != 0").strip() for _ in range(6)]
        assert answers == ["True"] * 6, answers  # always the head: the child is gone
        t.run("q = os.fork()\nif q == 0: print('child ran', flush=True)")
        assert t.run("q != 0").strip() == "True"
        assert "child ran" in t.text()
    finally:
        t.close()


def test_shell_input_a_raw_escape_ctrl_z_and_names_like_commands(tmp_path: Path, isolated: str) -> None:
    """A typed ESC[31m is ignored (no line-editor traceback); Ctrl-Z inserts nothing (it
    suspends the shell as other shells do); in post-mortem `where = 3` is Python."""
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.child.send("x = 1\x1b[31m\r")
        t.wait_prompt()
        assert t.run("x").strip() == "1" and "Traceback" not in t.text()
        # Ctrl-Z in an orphaned group (pexpect's) stops nothing; nothing is typed into the line.
        t.child.send("\x1a")
        t.wait_prompt()  # drawn again after the suspension
        assert t.run("x + 1").strip() == "2"
        assert "\x1a" not in t.text()
    finally:
        t.close()
    script = tmp_path / "s.py"
    script.write_text("def f(up):\n    raise ValueError(up)\nf(1)\n")
    t = Terminal(["run", str(script)], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.run("where = 3")
        assert t.run("print(where, up)").strip() == "3 1"  # Python, in the failing frame
        assert "s.py" in t.run("where")  # the word alone is still the command
    finally:
        t.close()


def test_ctrl_z_stops_the_shell_as_a_job_and_fg_brings_it_back(tmp_path: Path, isolated: str) -> None:
    """Under an interactive bash (job control, as a user has it), Ctrl-Z stops the shell and
    its head, bash says "Stopped", and ``fg`` brings back the same head with its state."""
    env = env_for(tmp_path, isolated) | {"PS1": "BASH$ "}
    exe = Path(sys.executable).with_name("forkpoint")
    sh = pexpect.spawn(
        "bash",
        ["--norc", "--noprofile", "-i"],
        env=env,
        cwd=str(tmp_path),
        encoding="utf-8",
        dimensions=(50, 200),
        timeout=30,
        codec_errors="replace",
    )
    try:
        sh.expect(r"BASH\$ ")
        sh.sendline(f"{exe} shell")
        sh.expect(FRESH_PROMPT)
        sh.send("x = 41\r")
        sh.expect(FRESH_PROMPT)
        sh.send("\x1a")
        sh.expect(r"Stopped.*BASH\$ ")
        job = psutil.Process(sh.pid).children()[0]
        group = [p for p in job.children(recursive=True) + [job] if os.getpgid(p.pid) == os.getpgid(job.pid)]
        assert len(group) >= 2, group  # the shell and its head, stopped together
        assert {p.status() for p in group} == {psutil.STATUS_STOPPED}, [(p, p.status()) for p in group]
        sh.sendline("fg")
        sh.expect(FRESH_PROMPT)
        sh.send("x + 1\r")
        sh.expect(FRESH_PROMPT)
        assert "42" in clean(sh.before)
        sh.send(":quit\r")
        sh.expect(r"BASH\$ ")
    finally:
        for p in psutil.Process(sh.pid).children(recursive=True):  # a stopped job on failure
            with contextlib.suppress(psutil.Error):
                p.kill()
        sh.close(force=True)


def test_pools_made_before_a_checkpoint_never_hang_after_a_rewind(tmp_path: Path, isolated: str) -> None:
    """A rewound head has none of the threads its pools had: a ThreadPoolExecutor starts new
    workers and works; a multiprocessing pool or a ProcessPoolExecutor says why it cannot."""
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.run(
            "import multiprocessing, concurrent.futures as cf; from multiprocessing.pool import ThreadPool; "
            "p = ThreadPool(2); q = multiprocessing.Pool(2); e = cf.ThreadPoolExecutor(2); "
            "x = cf.ProcessPoolExecutor(2); list(e.map(abs, [-1])), x.submit(abs, -1).result()"
        )
        t.run("y = 1")
        assert "rewound to [1]" in t.run(":rewind 1")
        assert t.run("list(e.map(abs, [-1, 2]))", timeout=10).splitlines()[0] == "[1, 2]"
        for pool in ("p.map(abs, [-1])", "q.map(abs, [-1])", "x.submit(abs, -1).result()"):
            said = t.run(pool, timeout=10)
            assert "was made before the checkpoint this process was rewound to" in said, said
        # (its dropped pool's threads may still be ending at the checkpoint: a notice may follow)
        assert t.run("ThreadPool(2).map(abs, [-5])", timeout=10).splitlines()[0] == "[5]"
        # Quit, not a terminal closed at once: the pools' worker processes (the first head's) are
        # ended by the controller's teardown, which a SIGKILL right after SIGHUP would cut short.
        t.finish(":quit")
    finally:
        t.close()


@pytest.mark.criu
def test_a_network_socket_at_save_is_named_not_cryptic(tmp_path: Path, isolated: str) -> None:
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.run("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0))")
        port = t.run("s.getsockname()[1]").strip()
        said = t.run(":save net", timeout=60)
        assert f"has a network socket open (UDP 127.0.0.1:{port}), which CRIU cannot save." in said, said
        assert "sock.close()" in said
        t.run("s.close()")
        assert 'as "net"' in t.run(":save net", timeout=60)
    finally:
        t.close()


def test_a_rewind_names_the_files_written_since(tmp_path: Path, isolated: str) -> None:
    t = Terminal(["shell"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        t.run("x = 1")  # [1]
        t.run("open('out.txt', 'w').write('after [1]')")
        t.run("import os; os.close(os.open('raw.bin', os.O_WRONLY | os.O_CREAT))")
        t.run("open('out.txt').read()")  # read only: not named
        said = t.run(":rewind 1")
        assert "rewound to [1]" in said
        expected = (
            f"files {tmp_path}/out.txt, {tmp_path}/raw.bin were written since [1]: a rewind puts memory back"
        )
        assert expected in said, said
        assert "written since" not in t.run(":rewind 1")  # nothing written since
    finally:
        t.close()


@pytest.mark.criu
def test_a_restore_with_the_stores_disk_full_works(tmp_path: Path, isolated: str, small_disk: Path) -> None:
    """The store on a 20 MB tmpfs holding a saved session and then filled: a restore writes
    nothing there (it once wrote its attach file there, and failed with an ENOSPC traceback,
    then with a sentence), so it works."""
    with Controller() as c:
        c.execute("z = 1")
        c.save("s", scope=SaveScope.ONLY)
    with open(small_disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
    env = {**env_for(tmp_path, isolated), "XDG_DATA_HOME": str(small_disk)}
    done = subprocess.run(
        [FORKPOINT, "restore", "s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith('restored "s" [1] in '), done.stdout
