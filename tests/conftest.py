"""Fixtures: isolated XDG dirs per test, and a leak check that fails any test leaving a process.

Every process a test starts inherits FORKPOINT_TEST_MARKER=<unique id> in its environment
(forked checkpoints share the environment block of their head), so after the test any
process whose /proc/PID/environ holds the marker is a leak.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Tests fork real processes on a 2-core machine: a per-example deadline would only be noise.
settings.register_profile("forkpoint", deadline=None)
settings.load_profile("forkpoint")

sys.path.insert(0, str(Path(__file__).parent))

from terminal import Terminal, env_for, wait_until  # noqa: E402

from forkpoint import paths  # noqa: E402
from forkpoint.controller import Controller  # noqa: E402
from forkpoint.controller.events import Event  # noqa: E402
from forkpoint.controller.supervisor import with_environ  # noqa: E402
from forkpoint.shell.messages import NOTICES, event_text  # noqa: E402

collect_ignore_glob = ["programs/*"]  # programs the tests run, pytest sessions among them


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Each phase's report on the test item (``rep_call``): a fixture can see the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def said(events: list[Event], *kinds: type) -> list[str]:
    """What the terminal says for the events of these types (default: its notices)."""
    return [event_text(e) for e in events if isinstance(e, kinds or NOTICES)]


def processes_with(marker: str) -> list[int]:
    return with_environ("FORKPOINT_TEST_MARKER", marker)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Own XDG dirs and a leak marker for each test; fail the test if a process survives it."""
    marker = uuid.uuid4().hex
    for var, sub in (
        ("XDG_RUNTIME_DIR", "run"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        (tmp_path / sub).mkdir(mode=0o700)
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("FORKPOINT_TEST_MARKER", marker)
    yield marker
    if not wait_until(lambda: not processes_with(marker), timeout=3.0):
        leaked = processes_with(marker)
        for pid in leaked:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        pytest.fail(f"processes left behind: {leaked}")
    left = _dirs_left(tmp_path)
    if left:
        pytest.fail(f"left behind: {left}")


def _dirs_left(tmp: Path) -> list[str]:
    """Runtime dirs and partial saves still there after the test: every controller it started
    has ended, so either is a leak (a killed one's are swept by the next forkpoint command,
    which a test that kills one must run)."""
    runtime = Path(paths.runtime_root())  # under tmp unless its path is too long for a socket's
    sessions = tmp / "data" / "forkpoint" / "sessions"
    mine = runtime.is_dir() and tmp in runtime.parents
    left = [str(p) for p in runtime.glob("*") if p.name.split("-")[0].isdigit()] if mine else []
    if sessions.is_dir():
        left += [str(p) for p in sessions.glob(".*") if ".saving-" in p.name or ".old-" in p.name]
    return left


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The session store on a 20 MB tmpfs of its own (root only), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(small)], check=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(small))
    try:
        yield small
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return tmp_path / "head-output.txt"


@pytest.fixture
def controller(output: Path) -> Iterator[Controller]:
    """A started controller whose head writes to a file instead of a terminal."""
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with Controller(stdio=(null, out, out), max_checkpoints=50) as c:
            yield c
    finally:
        os.close(out)
        os.close(null)


@pytest.fixture
def term(tmp_path: Path, isolated: str) -> Iterator[Terminal]:
    """``forkpoint shell`` in a real pty, at its first prompt."""
    t = Terminal(["shell"], env_for(tmp_path, isolated))
    try:
        t.wait_prompt()
        yield t
    except BaseException:
        (tmp_path / "transcript.txt").write_text(t.text())
        print(f"transcript: {tmp_path / 'transcript.txt'}\n{t.text()[-3000:]}")
        raise
    finally:
        t.close()


class ScriptRun:
    """A script run by ``controller`` whose head writes to ``output``: resume it and read what
    it printed since, and the notices forkpoint gave."""

    def __init__(self, c: Controller, output: Path) -> None:
        self.c, self.output = c, output

    def resumed(self) -> tuple[str, str]:
        """Resume with the files as they are; (where it resumed, what it printed)."""
        mark = len(self.output.read_text())
        resumed = self.c.resume()
        assert resumed.result.status == "exit", resumed.result.traceback
        return resumed.where, self.output.read_text()[mark:]

    def notices(self) -> list[str]:
        return said(self.c.events)
