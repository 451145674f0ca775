"""Continuing a call from a checkpoint before a line inside it, with the function's new code.

The oracle is differential: a generated function fails at ``bug()`` somewhere inside nested
loops, ``if``, ``with`` and ``try`` blocks; the fix removes the bug and edits the code after
it. Resuming from the checkpoint before the line above the bug must print exactly what a
fresh run of the fixed program prints from that checkpoint on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ScriptRun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkpoint.controller import Controller

HEADER = """\
class Box:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        print("enter", self.name)
        return self

    def __exit__(self, *exc):
        print("exit", self.name, exc[0].__name__ if exc[0] else None)
        return False


def bug():
    raise RuntimeError("bug")


"""


class Program:
    """A generated function; the line of its site; the bug; the tails before and after the fix."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.loops = 0

    def add(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)


def _plain(draw: st.DrawFn, prog: Program, depth: int, in_loop: bool) -> None:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        prog.add(depth, f"n = (n * {draw(st.integers(2, 5))} + {draw(st.integers(0, 9))}) % 1000")
    elif choice == 1:
        prog.add(depth, "print('at', n, [v for v in seen][-2:])")
    elif choice == 2:
        prog.add(depth, "seen.append(n)")
    else:
        prog.add(depth, f"if n % {draw(st.integers(2, 4))} == 0:")
        prog.add(
            depth + 1, "n += 1" if not in_loop else draw(st.sampled_from(["n += 1", "continue", "break"]))
        )


def _tail(draw: st.DrawFn, depth: int, in_loop: bool, version: int) -> list[str]:
    """What follows the bug in its block: edited by the fix (different constants), and may
    leave the loops around it or the call."""
    k = 3 + version * 4
    lines = [f"n = n * {k} + {version}", f"print('tail', {version}, n)"]
    end = draw(st.sampled_from(["", "return", "continue", "break"] if in_loop else ["", "return"]))
    if end == "return":
        lines.append(f"if n % 2:\n{'    ' * (depth + 1)}return n + {version}")
    elif end:
        lines.append(f"if n % 3 == 0:\n{'    ' * (depth + 1)}{end}")
    return ["    " * depth + line for line in lines]


@st.composite
def programs(draw: st.DrawFn) -> tuple[str, str, int]:
    """(broken source, fixed source, line of the site)."""
    prog = Program()
    method, recursive = draw(st.booleans()), draw(st.booleans())
    prog.add(0, "def work(self, n):" if method else "def work(n):")
    prog.add(1, "seen = []")
    if recursive:  # deeper calls hit the site first; outer ones would go on with old code
        prog.add(1, "if n > 3:")
        prog.add(2, f"n = (n + {'self.' if method else ''}work(n - 3)) % 50")
    closure = draw(st.booleans())
    if closure:
        prog.add(1, "def scaled(v):")
        prog.add(2, "return v * len(seen) + n")  # a closure over n: n becomes a cell
    depth, in_loop, tails = 1, False, []
    for _ in range(draw(st.integers(0, 4))):
        for _ in range(draw(st.integers(0, 2))):
            _plain(draw, prog, depth, in_loop)
        kind = draw(st.sampled_from(["for", "while", "if", "with", "try", "except", "finally"]))
        if kind == "for":
            prog.loops += 1
            prog.add(depth, f"for i{prog.loops} in range({draw(st.integers(1, 4))}):")
            in_loop = True
        elif kind == "while":
            prog.loops += 1
            prog.add(depth, f"w{prog.loops} = 0")
            prog.add(depth, f"while w{prog.loops} < {draw(st.integers(1, 4))}:")
            prog.add(depth + 1, f"w{prog.loops} += 1")
            in_loop = True
        elif kind == "if":
            prog.add(depth, "if n >= 0:")
        elif kind == "with":
            prog.add(depth, f"with Box('b{depth}') as box{depth}:")
        elif kind == "try":
            prog.add(depth, "try:")
            tails.append((depth, ["except KeyError:", "    print('never')"]))
        elif kind == "except":
            prog.add(depth, "try:")
            prog.add(depth + 1, "seen.append(-1)")
            prog.add(depth + 1, "raise KeyError(n)")
            prog.add(depth, "except KeyError as err:")
            prog.add(depth + 1, "print('caught', err)")
        else:
            prog.add(depth, "try:")
            tails.append((depth, ["finally:", "    print('finally', n)"]))
        depth += 1
    for _ in range(draw(st.integers(0, 2))):
        _plain(draw, prog, depth, in_loop)
    prog.add(depth, "print('site', n, len(seen))")
    head = list(prog.lines)
    tail_old = _tail(draw, depth, in_loop, 0)
    tail_new = _tail(draw, depth, in_loop, 1)
    closing = []
    for d, lines in reversed(tails):
        closing += ["    " * d + line for line in lines]
    closing += ["    return n + scaled(2)" if closure else "    return n"]
    call = "Worker().work" if method else "work"
    main = ["", "", f"print('result', {call}(3))", f"print('again', {call}(7))", ""]
    versions = []
    for body in (head + ["    " * depth + "bug()"] + tail_old, head + ["    " * depth + "pass"] + tail_new):
        function = "\n".join(body + closing).splitlines()
        if method:  # a method, with super() and a private name on the way
            function = ["class Base:", "    pass", "", "", "class Worker(Base):"] + [
                "    " + line for line in function
            ]
            function.insert(
                function.index("        seen = []") + 1, "        self.__calls = super().__init__()"
            )
        versions.append(HEADER + "\n".join(function + main))
    site = next(n for n, line in enumerate(versions[0].splitlines(), 1) if "print('site'" in line)
    return versions[0], versions[1], site


def fresh(path: Path) -> str:
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60).stdout


@settings(
    max_examples=int(os.environ.get("FORKPOINT_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(program=programs())
def test_resume_inside_a_call_prints_what_a_fresh_run_prints(
    program: tuple[str, str, int], tmp_path: Path, output: Path
) -> None:
    broken, fixed, site = program
    script = tmp_path / "prog.py"
    script.write_text(broken)
    output.write_text("")
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with Controller(stdio=(null, out, out)) as c:
            result = c.run_script(str(script), [], lines=(site,))
            before = output.read_text()
            if result.status != "error":  # the bug's block never ran: nothing to resume
                assert result.status == "exit"
                return
            script.write_text(fixed)
            resumed = c.resume()
            # a recursive call resumes further out (the function is also running there)
            if "work(n - 3)" not in broken:
                assert resumed.where.startswith(f"before line {site} in call "), resumed.where
            assert resumed.result.status == "exit", resumed.result.traceback
            after = output.read_text()[len(before) :]
    finally:
        os.close(out)
        os.close(null)
    expected = fresh(script)
    # The run up to the checkpoint printed what the fixed program prints up to there (the edit
    # is below the checkpoint); from the checkpoint on, the new code ran.
    assert expected.endswith(after), (after, expected)
    assert before.startswith(expected[: len(expected) - len(after)])


class Session(ScriptRun):
    """A controller whose head writes to ``output``; ``script`` is the file it runs."""

    def __init__(self, c: Controller, output: Path, script: Path) -> None:
        super().__init__(c, output)
        self.script = script

    def run(self, source: str, **sites: tuple[int, ...] | tuple[str, ...]) -> str:
        """Run with a checkpoint at every hit: these tests say which call a resume starts in
        (the spacing of hits, on by default, is tested on its own in test_run.py)."""
        self.script.write_text(source)
        result = self.c.run_script(str(self.script), [], every_hit=True, **sites)  # type: ignore[arg-type]
        assert result.status == "error", result
        return self.output.read_text()

    def resume(self, source: str) -> tuple[str, str]:
        """Resume after writing ``source``; (where it resumed, what it printed)."""
        self.script.write_text(source)
        return self.resumed()


@pytest.fixture
def session(tmp_path: Path, output: Path, controller: Controller) -> Session:
    return Session(controller, output, tmp_path / "prog.py")


def line_of(source: str, text: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if text in line)


METHODS = """\
class Base:
    def total(self, xs):
        return sum(xs)


class Report(Base):
    def __init__(self):
        self.__seen = 0

    def run(self, xs):
        scale = 2

        def scaled(v):
            return v * scale

        for x in xs:
            self.__seen += 1
            print("item", x, scaled(x))
            check(x)
        return super().total(xs) + self.__seen


def check(x):
    if x > 2:
        raise ValueError(x)


print("result", Report().run([1, 2, 3, 4]))
"""


def test_methods_with_super_private_names_and_closures(session: Session) -> None:
    site = line_of(METHODS, 'print("item"')
    session.run(METHODS, lines=(site,))
    fixed = METHODS.replace("    check(x)", "    check(x - 10)").replace("scaled(x))", "scaled(x), 'new')")
    where, out = session.resume(fixed)
    assert where.startswith(f"before line {site} in call 1 of Report.run()")
    assert out == "item 3 6 new\nitem 4 8 new\nresult 14\n"  # sum 10 + 4 items seen


RECURSIVE = """\
def depth(n):
    print("in", n)
    if n == 0:
        return 0
    value = depth(n - 1) + 1
    if value > 1:
        raise ValueError(value)
    return value


print("depth", depth(3))
"""


def test_recursion_resumes_from_the_outermost_call_and_says_why(session: Session) -> None:
    site = line_of(RECURSIVE, "if n == 0")
    session.run(RECURSIVE, lines=(site,))
    fixed = RECURSIVE.replace("if value > 1:", "if value > 5:")
    where, out = session.resume(fixed)
    # Deeper calls' checkpoints would leave outer calls of depth() running the old code.
    assert where.startswith(f"before line {site} in call 1 of depth()")
    assert any("depth() is also running further out" in n for n in session.notices())
    assert out == "in 2\nin 1\nin 0\ndepth 3\n"


def test_an_edit_above_the_site_resumes_further_out_and_says_why(session: Session) -> None:
    source = "def f(n):\n    n += 1\n    print('n', n)\n    raise ValueError(n)\n\n\nprint('start')\nf(1)\n"
    session.run(source, lines=(3,))
    where, out = session.resume(source.replace("n += 1", "n += 2").replace("raise ValueError(n)", "return n"))
    assert where == "line 7: print('start')"
    assert out == "n 3\n"
    assert "[3] cannot go on with the new code: the edit is above line 3 in f()" in session.notices()


def test_removing_the_function_resumed_into_says_so(session: Session) -> None:
    source = "print('start')\n\n\ndef f(n):\n    print('n', n)\n    raise ValueError(n)\n\n\nf(1)\n"
    session.run(source, lines=(5,))
    fixed = "print('start')\n\n\ndef g(n):\n    print('g', n)\n\n\ng(1)\n"
    where, out = session.resume(fixed)
    assert where == "line 1: print('start')" and out == "g 1\n"
    assert any("f() is not in the new code" in n for n in session.notices())


def test_a_line_site_moves_with_its_statement(session: Session) -> None:
    source = "def f(n):\n    for i in range(n):\n        print('i', i)\n        assert i < 2\n\n\nf(4)\n"
    session.run(source, lines=(3,))
    fixed = "# a comment\n# and another\n" + source.replace("assert i < 2", "assert i < 5")
    where, out = session.resume(fixed)
    # Named as the file reads now: the statement moved from line 3 to line 5 with the edit.
    assert where.startswith("before line 5 in call 1 of f(): print('i', i)")
    assert out == "i 2\ni 3\n"
    assert session.c.script is not None and session.c.script.lines == {str(session.script): [5]}


def test_a_hot_line_site_keeps_the_checkpoints_that_start_the_running_call(
    tmp_path: Path, output: Path
) -> None:
    script = tmp_path / "hot.py"
    source = (
        "print('start')\n"
        "def run(n):\n"
        "    total = 0\n"
        "    for i in range(n):\n"
        "        total += i\n"
        "        assert i < n - 1, total\n"
        "    return total\n"
        "\n"
        "print(run(600))\n"
    )
    script.write_text(source)
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out), max_checkpoints=30) as c:
            result = c.run_script(str(script), [], entries=("run",), lines=(5,))
            assert result.status == "error"
            alive = {n.id: n for n in c.view().alive()}
            assert len(alive) <= 30
            kinds = {(n.entry, n.line) for n in alive.values()}
            assert ("run", None) in kinds  # the entry of the running call
            statement = [n for n in alive.values() if n.entry is None and n.site == 1]  # after def run
            assert statement, "the checkpoint before the running statement was evicted"
            script.write_text(source.replace("n - 1", "n"))
            resumed = c.resume()
            assert resumed.where.startswith("before line 5 in call 1 of run()")
            assert resumed.result.status == "exit"
    finally:
        os.close(out)
    assert output.read_text().endswith(f"{sum(range(600))}\n")
