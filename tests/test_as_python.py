"""``forkpoint run`` is python: the same exit code, output and module state, checked against
``python`` running the same file (the differential oracle)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import said
from terminal import command

from forkpoint.controller import Controller, Status
from forkpoint.controller.events import FilesRewound, Resuming
from forkpoint.controller.script import Script

FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


def both(tmp_path: Path, marker: str, source: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    """(python, forkpoint run --on-error exit) of the same script, no terminal."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(source))
    python = command(tmp_path, marker, sys.executable, str(script))
    return python, command(tmp_path, marker, FORKPOINT, "run", str(script), "--on-error", "exit")


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


def test_a_flag_a_decorator_set_survives_the_first_call(tmp_path: Path, isolated: str) -> None:
    """types.coroutine marks a generator's code awaitable; the first-call swap must keep it."""
    source = """\
        import asyncio, types

        @types.coroutine
        def tick():
            yield

        async def main():
            for _ in range(3):
                await tick()
            print("awaited", tick.__code__.co_flags & 0x100 != 0)

        asyncio.run(main())
        """
    python, forkpoint = both(tmp_path, isolated, source)
    assert python.stdout == "awaited True\n"
    assert (forkpoint.returncode, forkpoint.stdout) == (0, python.stdout), forkpoint.stderr


MOVED = """\
def work(i):
    return i * 2

def helper(i):
    return i + 1

def check(total):
    if total != 6:
        raise ValueError(total)

total = sum(work(i) for i in range(3))
check(total + 1)
helper(0)  # its first call, after the resume
helper(0)  # the marker is swapped out at the next marked call (the first one is over)
import sys
seen = []
sys.setprofile(lambda frame, event, arg: seen.append(frame.f_code.co_name) if event == "call" else None)
ys = [helper(i) for i in range(5)]
sys.setprofile(None)
print("first-call markers run", seen.count("called"), ys)
"""


def test_functions_first_called_after_a_resume_that_moved_them_run_unmarked(
    tmp_path: Path, output: Path
) -> None:
    """An edit above a function moves it; its first call after the resume must still swap in
    the unmarked code (it stayed marked, and slow, forever)."""
    script = tmp_path / "moved.py"
    script.write_text(MOVED)
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out)) as c:
            assert c.run_script(str(script), []).status is Status.ERROR
            fixed = "# two lines added above\n# so that everything moves\n" + MOVED.replace(
                "check(total + 1)", "check(total)"
            )
            script.write_text(fixed)
            assert c.resume().result.status is Status.EXIT
    finally:
        os.close(out)
    fresh = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert fresh.stdout == "first-call markers run 0 [1, 2, 3, 4, 5]\n"
    assert output.read_text() == fresh.stdout


def test_another_virtualenv_of_the_same_python_runs_the_script(tmp_path: Path, isolated: str) -> None:
    """forkpoint installed once, each project with its own venv: --python that venv's python
    runs the script there, with that venv's packages and none of forkpoint's."""
    import venv

    venv.create(tmp_path / "project-venv", with_pip=False, symlinks=True)  # as `python -m venv` makes it
    python = tmp_path / "project-venv" / "bin" / "python"
    (tmp_path / "where.py").write_text(
        "import sys, importlib.util as u\n"
        "print(sys.prefix)\n"
        "print(u.find_spec('psutil') is None, u.find_spec('prompt_toolkit') is None)\n"
    )
    done = command(
        tmp_path, isolated, FORKPOINT, "run", "--python", str(python), "where.py", "--on-error", "exit"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(tmp_path / "project-venv"), "True True"]


MAIN = '''\
"""doc"""
x: int = 1
import sys, inspect, pickle, linecache, traceback
print(sorted(k for k in globals() if k.startswith("__")))
print(type(__loader__).__name__, __spec__, __cached__, type(__builtins__).__name__, __package__, __doc__)
print(__annotations__, [k for k in dir() if not k.isidentifier()])
def f():
    return 1
class C:
    pass
print(inspect.getsource(f).strip().splitlines()[0])
print(pickle.loads(pickle.dumps(C())).__class__.__name__)
print(linecache.getline(__file__, 1).strip(), __loader__.get_source("__main__").splitlines()[1])
print(sys.argv[0], sys.path[0] == __import__("os").path.dirname(__file__), __name__)
try:
    f() / 0
except ZeroDivisionError:
    print(traceback.format_exc().splitlines()[-2].strip())
'''


def test_main_is_pythons(tmp_path: Path, isolated: str) -> None:
    python, forkpoint = both(tmp_path, isolated, MAIN)
    assert python.returncode == 0, python.stderr
    assert forkpoint.stdout == python.stdout, forkpoint.stderr
    assert forkpoint.returncode == 0


def test_multiprocessing_children_import_main_from_its_path(tmp_path: Path, isolated: str) -> None:
    source = """\
        import multiprocessing as mp

        def square(x):
            return x * x

        if __name__ == "__main__":
            for method in ("spawn", "forkserver", "fork"):
                with mp.get_context(method).Pool(2) as pool:
                    print(method, pool.map(square, range(5)))
        """
    python, forkpoint = both(tmp_path, isolated, source)
    assert python.stdout.count("[0, 1, 4, 9, 16]") == 3
    assert (forkpoint.returncode, forkpoint.stdout) == (0, python.stdout), forkpoint.stderr


def test_resume_says_where_in_the_file_as_edited(tmp_path: Path, output: Path) -> None:
    """The edit added two lines above the checkpoint's statement: the resume names its new line."""
    script = tmp_path / "s.py"
    script.write_text("def report(x):\n    print('x', x)\n\nx = 21\ny = x * 2\nreport(y)\nraise ValueError\n")
    events: list[object] = []
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out), on_event=events.append) as c:
            assert c.run_script(str(script), []).status is Status.ERROR
            script.write_text(
                "def report(x):\n    # reports\n    # twice\n    print('x', x)\n    print('x', x)\n\n"
                "x = 21\ny = x * 2\nreport(y)\n"
            )
            resumed = c.resume()
    finally:
        os.close(out)
    assert resumed.where == "line 8: y = x * 2"
    told = said(events, Resuming)  # type: ignore[arg-type]
    assert (
        len(told) == 1 and told[0].startswith("resuming from [") and "] after line 8: y = x * 2:" in told[0]
    )


WRITER = """\
import sys

def write(path, n):
    with open(path, "w") as fp:
        for i in range(n):
            fp.write(f"line {i:04d} " + "x" * 90 + "\\n")
            if i == 150:
                raise ValueError(i)

write(sys.argv[1], 200)
print("done")
"""


def test_a_file_being_written_is_rewound_with_the_head(tmp_path: Path, output: Path) -> None:
    """A checkpoint inside ``with open(path, "w")``, a failure, a fix, a resume: the file must
    be what a fresh run of the fixed program writes (the failed head's writes are cut off), and
    the resume says which file it cut back."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    target = tmp_path / "out.txt"
    events: list[object] = []
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out), on_event=events.append) as c:
            result = c.run_script(str(script), [str(target)], lines={str(script): [6]})
            assert result.status is Status.ERROR
            script.write_text(WRITER.replace("i == 150", "i == 1000"))
            resumed = c.resume()
            assert resumed.result.status is Status.EXIT, resumed.result.traceback
            assert resumed.where.startswith("before line 6 in call 1 of write()")
    finally:
        os.close(out)
    fresh = tmp_path / "fresh.txt"
    subprocess.run([sys.executable, str(script), str(fresh)], check=True, timeout=60)
    assert target.read_bytes() == fresh.read_bytes()
    told = said(events, FilesRewound)  # type: ignore[arg-type]
    assert told and str(target) in told[-1] and "cut back" in told[-1]


NQUEENS = """\
def permutations(iterable):
    pool = tuple(iterable)
    n = len(pool)
    indices = list(range(n))
    cycles = list(range(n - 1 + 1, 0, -1))
    yield tuple(pool[i] for i in indices[:n])
    while n:
        for i in reversed(range(n)):
            cycles[i] -= 1
            if cycles[i] == 0:
                indices[i:] = indices[i + 1:] + indices[i:i + 1]
                cycles[i] = n - i
            else:
                j = cycles[i]
                indices[i], indices[-j] = indices[-j], indices[i]
                yield tuple(pool[i] for i in indices[:n])
                break
        else:
            return


def n_queens(queen_count):
    cols = range(queen_count)
    for vec in permutations(cols):
        if queen_count == len(set(vec[i] + i for i in cols)) == len(set(vec[i] - i for i in cols)):
            yield vec


def solve(n):
    return sum(1 for _ in n_queens(n))


for n in range(4, 8):
    print(n, solve(n))
"""


def test_a_checkpoint_asked_in_a_generator_goes_to_its_nearest_plain_caller(
    tmp_path: Path, isolated: str
) -> None:
    """nqueens is generators all the way down: the checkpoint goes to solve(), which calls them."""
    (tmp_path / "nq.py").write_text(NQUEENS)
    fresh = command(tmp_path, isolated, sys.executable, "nq.py")
    for spec in ("permutations", "nq.py:25"):
        done = command(
            tmp_path, isolated, FORKPOINT, "run", "nq.py", "--checkpoint-at", spec, "--on-error", "exit"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == fresh.stdout
        assert "so the checkpoint is at the entry of solve() instead" in done.stderr


def make_package(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    (tmp_path / "pkg" / "__main__.py").write_text("print('main', __name__, __spec__.name, __package__)\n")
    (tmp_path / "pkg" / "tool.py").write_text(
        "import os, sys\n"
        "from . import helper\n"
        "print(__name__, __package__, __spec__.name, sys.argv[0] == __file__, sys.argv[1:])\n"
        "print(sys.path[0] == os.getcwd(), helper.twice(21))\n"
    )


@pytest.mark.parametrize(
    "program",
    [
        ["-m", "pkg.tool"],
        ["-m", "pkg"],
        ["-c", "import sys; print(sys.argv, repr(sys.path[0]), __name__, '__file__' in globals()); 1/0"],
    ],
)
def test_dash_m_and_dash_c_are_pythons(tmp_path: Path, isolated: str, program: list[str]) -> None:
    make_package(tmp_path)
    python = command(tmp_path, isolated, sys.executable, *program, "-x", "b")
    # After the program, as python takes them; or forkpoint's options, then `--` and the program's.
    for words in (
        ["--on-error", "exit", *program, "-x", "b"],
        [*program, "--on-error", "exit", "--", "-x", "b"],
    ):
        forkpoint = command(tmp_path, isolated, FORKPOINT, "run", *words)
        assert forkpoint.returncode == python.returncode, forkpoint.stderr
        assert forkpoint.stdout == python.stdout
        if program[0] == "-c":
            assert python.stderr in forkpoint.stderr  # the traceback, without source lines, as python's


def test_dash_m_fails_is_edited_and_resumes(
    tmp_path: Path, output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """python -m runs a module of the current folder: its functions and its package's are
    the user's code, so a fix in the package resumes as a script's does."""
    make_package(tmp_path)
    tool = tmp_path / "pkg" / "tool.py"
    tool.write_text("from . import helper\nx = helper.twice(21)\nprint('x', x)\nprint(helper.twice(None))\n")
    monkeypatch.chdir(tmp_path)  # the head starts in the folder, as python -m would
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out)) as c:
            result = c.run_script(str(tool), [], module="pkg.tool")
            assert result.status is Status.ERROR and result.traceback and "TypeError" in result.traceback
            (tmp_path / "pkg" / "helper.py").write_text("def twice(x):\n    return 2 * (x or 0)\n")
            resumed = c.resume()
            assert resumed.result.status is Status.EXIT, resumed.result.traceback
    finally:
        os.close(out)
    # helper.twice had run the old code, so the resume goes on from before its first call
    fresh = subprocess.run([sys.executable, "-m", "pkg.tool"], capture_output=True, text=True, timeout=60)
    assert fresh.stdout == "x 42\n0\n"
    assert output.read_text() == "x 42\n" + fresh.stdout
