"""CPython's own test modules, run as scripts, under ``forkpoint run`` and under ``python``:
the same exit code and the same unittest summary (programs nobody here wrote).

A module is skipped where this interpreter's Lib/test does not have it as a file, or where it
does not pass under python run as a file from a folder of its own.
"""

from __future__ import annotations

import re
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest
from terminal import command

FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))
TESTS = Path(sysconfig.get_paths()["stdlib"]) / "test"
MODULES = [
    # plain library code
    "textwrap", "fractions", "heapq", "bisect", "collections", "string", "copy", "abc", "operator",
    "shlex", "getopt", "difflib", "re", "functools", "enum", "typing", "with", "scope", "generators",
    # tracebacks and the interpreter's own state
    "traceback", "sys",
    # asyncio and coroutines
    "asyncgen", "contextlib_async", "coroutines",
    # threads, signals, subprocesses
    "thread", "threading_local", "sched", "threadsignals", "popen",
    # pickling
    "copyreg", "pickletools",
]  # fmt: skip
RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)


def summary(stderr: str) -> tuple[str, str]:
    """('Ran N tests', the verdict line: OK, OK (skipped=3), FAILED (...)), timings left out."""
    ran = RAN.search(stderr)
    lines = [line for line in stderr.strip().splitlines() if line.startswith(("OK", "FAILED"))]
    return (f"Ran {ran.group(1)}" if ran else "", lines[-1] if lines else "")


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_a_cpython_test_module_gives_what_python_gives(tmp_path: Path, isolated: str, name: str) -> None:
    source = TESTS / f"test_{name}.py"
    if not source.is_file():
        pytest.skip(f"test_{name} is not a file in {TESTS}")
    script = tmp_path / source.name
    shutil.copy(source, script)
    python = command(tmp_path, isolated, sys.executable, script.name, timeout=300)
    if python.returncode != 0:
        pytest.skip(f"test_{name} does not pass under python run as a file: {summary(python.stderr)}")
    under = command(tmp_path, isolated, FORKPOINT, "run", script.name, "--on-error", "exit", timeout=300)
    assert under.returncode == python.returncode, under.stderr[-3000:]
    assert summary(under.stderr) == summary(python.stderr), under.stderr[-3000:]
