"""The differential oracle on classic benchmark programs (the Computer Language Benchmarks
Game's, written here as deterministic scripts): each is run with a checkpoint on a line
inside its main loop, fails on a bug a few lines further down in the same function, is fixed
by an edit that also moves every line, and resumed. What the resume prints must be what a
fresh run of the fixed program prints from that checkpoint on, and what the first run printed
before it must be the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forkpoint.controller import Controller, Status

PROGRAMS = Path(__file__).parent / "programs" / "classic"


def fixed(source: str) -> str:
    return "# fixed: the assertion held the bug\n# (and two lines above move everything)\n" + source.replace(
        ', "BUG"', ' or True, "BUG"'
    )


@pytest.mark.parametrize("name", ["spectral_norm", "nbody", "fannkuch"])
def test_run_fail_fix_resume_prints_what_a_fresh_run_prints(tmp_path: Path, output: Path, name: str) -> None:
    source = (PROGRAMS / f"{name}.py").read_text()
    site = next(i for i, line in enumerate(source.splitlines(), 1) if line.endswith("# SITE"))
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out)) as c:
            result = c.run_script(str(script), [], lines={str(script): [site]})
            assert result.status is Status.ERROR and result.traceback and "BUG" in result.traceback
            first = output.read_text()
            script.write_text(fixed(source))
            resumed = c.resume()
            assert resumed.result.status is Status.EXIT, resumed.result.traceback
            assert resumed.where.startswith(f"before line {site + 2} in call 1 of ")  # inside the call
    finally:
        os.close(out)
    after = output.read_text()[len(first) :]
    fresh = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120).stdout
    assert after and fresh.endswith(after)
    assert first[: len(fresh) - len(after)] + after == fresh
