"""``forkpoint run`` is python: the same exit code, output and module state, checked against
``python`` running the same file (the differential oracle)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from terminal import env_for

from forkpoint.controller.script import Script

FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


def both(tmp_path: Path, marker: str, source: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    """(python, forkpoint run --on-error exit) of the same script, no terminal."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(source))
    env = env_for(tmp_path, marker)
    runs = []
    for argv in ([sys.executable, str(script)], [FORKPOINT, "run", str(script), "--on-error", "exit"]):
        runs.append(
            subprocess.run(
                argv,
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=60,
            )
        )
    return tuple(runs)


@pytest.mark.parametrize(
    "ending",
    [
        "sys.exit(False)",
        "sys.exit(True)",
        "sys.exit(None)",
        "sys.exit(3)",
        "sys.exit('bye')",
        "raise SystemExit(True)",
        "pass",
    ],
)
def test_exit_codes_are_pythons(tmp_path: Path, isolated: str, ending: str) -> None:
    python, forkpoint = both(tmp_path, isolated, f"import sys\nprint('out')\n{ending}\n")
    assert forkpoint.returncode == python.returncode, forkpoint.stderr
    assert forkpoint.stdout == python.stdout
    assert python.stderr in forkpoint.stderr  # 'bye' where python prints it


def test_a_unittest_script_that_passes_exits_0(tmp_path: Path, isolated: str) -> None:
    source = """\
        import unittest

        class T(unittest.TestCase):
            def test_one(self):
                self.assertEqual(1 + 1, 2)

        if __name__ == "__main__":
            unittest.main()
        """
    python, forkpoint = both(tmp_path, isolated, source)
    assert python.returncode == 0
    assert forkpoint.returncode == 0, forkpoint.stderr
    assert "Ran 1 test" in forkpoint.stderr and forkpoint.stderr.rstrip().endswith("OK")


def test_titles_number_lines_as_the_compiler_does() -> None:
    """A form feed or a lone CR inside a line must not shift the titles (str.splitlines would)."""
    source = "a = 1  # \x0c form feed\nb = '\x1c'\r\nc = 3\rd = 4\n"
    script = Script("/nowhere/s.py", [], [source], 0.0)
    assert [script.describe(i) for i in range(4)] == [
        "line 1: a = 1  # \x0c form feed",
        "line 2: b = '\x1c'",
        "line 3: c = 3",
        "line 4: d = 4",
    ]
