"""``forkpoint run -m pytest``: a failing test stops the run in post-mortem; after a fix (in the
code under test or in the test itself) ``resume`` runs that test again with the new code and
then the rest of the session, as a fresh pytest run would end; with ``--on-error exit`` pytest
runs as under python."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from terminal import Terminal, command, env_for

pytestmark = pytest.mark.pty
SESSION = Path(__file__).parent / "programs" / "pytest_session"
FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))
ARGS = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_calc.py"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(SESSION, work)
    return work


def _summary(text: str) -> str:
    found = re.findall(r"\d+ (?:passed|failed)(?:, \d+ (?:passed|failed))* in", text)
    return found[-1] if found else ""


def test_a_failing_test_is_fixed_in_the_code_and_resumed(folder: Path, isolated: str) -> None:
    t = Terminal(["run", *ARGS], env_for(folder, isolated), cwd=str(folder))
    try:
        out = t.wait_prompt()
        assert "assert -1 == 5" in out and "post-mortem" in out  # pytest's own report of it
        assert t.run("total").strip() == "-1"  # in the failing test's frame
        calc = folder / "calc.py"
        calc.write_text(calc.read_text().replace("a - b", "a + b"))
        text = t.finish("resume")
        # From before test_add, or before test_mul when test_mul was too quick to be worth a fork.
        assert re.search(r"resuming from \[\d+\] the entry of call 1 of test_calc:test_(add|mul)", text)
        assert "table built" in out  # what the failing test printed, as pytest would show it
        assert _summary(text) == "5 passed in"  # test_mul's pass is kept from before the failure
        assert t.child.exitstatus == 0
    finally:
        t.close()


def test_a_fix_in_the_test_keeps_pytests_assert_messages(folder: Path, isolated: str) -> None:
    """The swapped test is compiled with pytest's assert rewriting: a second failure is still
    explained ("assert -1 == 7"), and a second resume goes on too."""
    t = Terminal(["run", *ARGS], env_for(folder, isolated), cwd=str(folder))
    try:
        t.wait_prompt()
        test = folder / "test_calc.py"
        test.write_text(test.read_text().replace("total == 5", "total == 7"))
        out = t.run("resume")
        assert "assert -1 == 7" in out and "new code for test_calc:test_add" in out
        test.write_text(test.read_text().replace("total == 7", "total == -1"))
        text = t.finish("resume")
        assert _summary(text) == "5 passed in"
        assert t.child.exitstatus == 0
    finally:
        t.close()


def test_on_error_exit_is_pytest_as_under_python(folder: Path, isolated: str) -> None:
    python = command(folder, isolated, sys.executable, *ARGS)
    forkpoint = command(folder, isolated, FORKPOINT, "run", "--on-error", "exit", *ARGS)
    assert python.returncode == forkpoint.returncode == 1
    assert _summary(forkpoint.stdout) == _summary(python.stdout) == "1 failed, 4 passed in"
