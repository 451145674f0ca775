"""The session store, CRIU's discovery and `forkpoint doctor` (real CRIU, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forkpoint.errors import ForkpointError
from forkpoint.persist import store
from forkpoint.persist.criu import find_criu
from forkpoint.shell.render import human_bytes

FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), **env)
    return subprocess.run([FORKPOINT, *args], env=environ, capture_output=True, text=True, timeout=120)


def save(name: str, checkpoints: int = 1, **changes: object) -> None:
    session = store.Session(name, 1_700_000_000.0, "shell", 3, checkpoints)
    with store.build(name) as folder:
        (folder / "images").mkdir()
        (folder / "images" / "pages-1.img").write_bytes(b"\0" * 5000)
        meta = {**session.meta(), **changes}
        (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.criu
def test_doctor_measures_what_works_here(tmp_path: Path) -> None:
    done = cli(tmp_path, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok  fork checkpoints")
    assert any(line.startswith("ok  CRIU") and " 4." in line for line in lines)
    assert any(line.startswith("ok  criu check") and "Looks good." in line for line in lines), done.stdout
    assert any(line.startswith("ok  pycriu") for line in lines)
    assert any("PID conflicts" in line and "pid_max" in line for line in lines)
    assert any("session store" in line and str(tmp_path / "data") in line for line in lines)


def test_a_missing_or_old_criu_gets_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "criu"
    old.write_text("#!/bin/sh\necho 'Version: 3.17'\n")
    old.chmod(0o755)
    monkeypatch.setenv("FORKPOINT_CRIU", str(old))
    with pytest.raises(
        ForkpointError, match=r"CRIU is too old: .* is 3\.17; forkpoint needs 4\.0 or newer\."
    ):
        find_criu()
    monkeypatch.setenv("FORKPOINT_CRIU", str(tmp_path / "nowhere"))
    with pytest.raises(
        ForkpointError, match=r"^CRIU is not installed\. \(make install fetches one into the venv\)$"
    ):
        find_criu()
    monkeypatch.delenv("FORKPOINT_CRIU")
    done = cli(tmp_path, "doctor", FORKPOINT_CRIU=str(old))
    assert done.returncode == 1 and "NO  CRIU" in done.stdout and "3.17" in done.stdout


# What CRIU 4.1.1 prints: a first run where /run is no tmpfs logs a warning after its verdict.
LOGGING_CRIU = """#!/bin/sh
case "$*" in
  --version) echo 'Version: 4.1.1' ;;
  check) echo 'Looks good.'; echo "Warn  (criu/kerndat.c:1285): Can't keep kdat cache on non-tempfs" >&2 ;;
  *) echo 'Error (criu/cr-check.c:1239): Non-cooperative UFFD is not supported' >&2; exit 1 ;;
esac
"""


def test_a_criu_check_is_told_by_its_verdict_not_by_its_log(tmp_path: Path) -> None:
    """CRIU says its verdict on stdout and logs on stderr: a warning logged by a check that
    passed is no verdict; a check that failed is told by the error it logged."""
    criu = tmp_path / "criu"
    criu.write_text(LOGGING_CRIU)
    criu.chmod(0o755)
    done = cli(tmp_path, "doctor", FORKPOINT_CRIU=str(criu))
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert "ok criu check Looks good." in lines, done.stdout + done.stderr
    assert (
        "NO userfaultfd (lazy restore) Error (criu/cr-check.c:1239): Non-cooperative UFFD is not supported"
        in lines
    ), done.stdout + done.stderr


def test_sessions_are_private_listed_and_removed(tmp_path: Path) -> None:
    save("nightly", checkpoints=2)
    folder = store.sessions_dir() / "nightly"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert oct(store.sessions_dir().stat().st_mode & 0o777) == "0o700"
    assert oct((folder / "images" / "pages-1.img").stat().st_mode & 0o777) == "0o600"
    session, where = store.load("nightly")
    assert where == folder and session.checkpoints == 2 and session.checkpoint == 3
    done = cli(tmp_path, "sessions")
    assert done.stdout.splitlines()[0].split() == ["NAME", "SAVED", "SOURCE", "CHECKPOINTS", "SIZE"]
    assert (
        done.stdout.splitlines()[1].split()[0] == "nightly"
        and human_bytes(store.size_of(folder)) in done.stdout
    )
    assert cli(tmp_path, "rm", "nightly").returncode == 0
    assert "no saved sessions" in cli(tmp_path, "sessions").stdout
    done = cli(tmp_path, "rm", "nightly")
    assert done.returncode == 2 and "forkpoint: there is no session named 'nightly'." in done.stderr


def test_a_failed_save_leaves_nothing_and_keeps_the_older_session(tmp_path: Path) -> None:
    save("work", checkpoints=1)
    with pytest.raises(OSError), store.build("work") as folder:
        (folder / "meta.json").write_text("{}")
        raise OSError(28, "No space left on device")  # what a full disk does mid-save
    assert [p.name for p in store.sessions_dir().iterdir()] == ["work"]
    assert store.load("work")[0].checkpoints == 1
    save("work", checkpoints=4)  # saving again replaces it whole
    assert store.load("work")[0].checkpoints == 4


def test_bad_sessions_get_one_sentence_and_harm_nothing_else(tmp_path: Path) -> None:
    save("good")
    save("other-python", python="2.7.18")
    save("broken")
    (store.sessions_dir() / "broken" / "meta.json").write_text('{"version": 2, "name": 3')
    save("older", version=1)
    save("theirs")
    if os.geteuid() == 0:
        os.chown(store.sessions_dir() / "theirs", 1234, 1234)
        with pytest.raises(ForkpointError, match=r"^session 'theirs' belongs to uid 1234, not to you\.$"):
            store.load("theirs")
    with pytest.raises(ForkpointError, match=r"^session 'broken' is damaged: its meta.json cannot be read"):
        store.load("broken")
    with pytest.raises(
        ForkpointError, match=r"^session 'other-python' was saved by Python 2\.7\.18 and forkpoint"
    ):
        store.load("other-python")
    with pytest.raises(
        ForkpointError, match=r"^session 'older' was saved in format 1; this forkpoint reads format 3 only\."
    ):
        store.load("older")
    with pytest.raises(ForkpointError, match=r"^there is no session named 'nope'\."):
        store.load("nope")
    with pytest.raises(ForkpointError, match=r"cannot name a session"):
        store.load("../etc")
    assert store.load("good")[0].name == "good"  # the others harmed nothing
    listed = {s.name: s.source for s in store.list_sessions()}
    assert listed["broken"] == "(damaged)" and listed["good"] == "shell"


@pytest.mark.criu
def test_without_privileges_save_and_restore_say_so_and_harm_nothing(tmp_path: Path) -> None:
    """Root whose capabilities were dropped (setpriv) stands in for an unprivileged user."""
    import shutil

    from forkpoint.controller import Controller

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    drop = [setpriv, "--securebits", "+noroot,+noroot_locked", "--bounding-set", "-all", "--inh-caps", "-all"]
    with Controller() as c:
        c.execute("x = 41")
        c.save("kept")
    environ = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    done = subprocess.run(
        [*drop, FORKPOINT, "restore", "kept"], env=environ, capture_output=True, text=True, timeout=120
    )
    needs = "needs root (or CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE); this process runs without"
    assert done.returncode != 0 and f"forkpoint: restoring a session {needs}" in done.stdout + done.stderr
    saving = "from forkpoint.controller import Controller\nwith Controller() as c:\n    c.save('other')\n"
    done = subprocess.run(
        [*drop, sys.executable, "-c", saving], env=environ, capture_output=True, text=True, timeout=120
    )
    assert f"ForkpointError: saving a session {needs}" in done.stderr
    assert [s.name for s in store.list_sessions()] == ["kept"]
    with Controller(restore="kept") as c:
        assert c.evaluate("x + 1") == (True, "42")
