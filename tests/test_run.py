"""forkpoint run: scripts with checkpoints, post-mortem, and resume after an edit.

The oracle is a differential one: for a deterministic program, run + edit + resume prints
exactly what a fresh run of the edited program prints from the resume point on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import said
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkpoint.controller import Controller
from forkpoint.controller.events import Evicted
from forkpoint.errors import ForkpointError

PROGRAMS = Path(__file__).parent / "programs"


class Run:
    """A controller whose head writes to a file, and the text written since a mark."""

    def __init__(self, controller: Controller, output: Path) -> None:
        self.c = controller
        self.output = output
        self.mark = 0

    def new_output(self) -> str:
        text = self.output.read_text()
        new, self.mark = text[self.mark :], len(text)
        return new


@pytest.fixture
def script_run(output: Path) -> Iterator[Run]:
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with Controller(stdio=(null, out, out)) as c:
            yield Run(c, output)
    finally:
        os.close(out)
        os.close(null)


def fresh_run(path: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=60)
    return done.stdout


def test_fix_and_resume_prints_what_a_fresh_run_prints(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    shutil.copy(PROGRAMS / "pipeline.py", script)
    result = script_run.c.run_script(str(script), ["4"])
    assert result.status == "error" and "every frame was written to frame{}.jpg" in (result.traceback or "")
    first = script_run.new_output()
    assert first == "loaded 4 frames from pipeline.py as __main__\ndetected 8 boxes\n"
    assert script_run.c.pm_exec("print(len(names))", 0) == (True, "")
    assert script_run.new_output() == "4\n"

    shutil.copy(PROGRAMS / "pipeline_fixed.py", script)
    resumed = script_run.c.resume()
    assert resumed.result.status == "exit" and resumed.result.exit_code == 0
    # only the drawing step runs again: the checkpoint just before draw() was first called
    assert resumed.where == 'line 17: print("detected", sum(len(d) for d in detections), "boxes")'
    expected = fresh_run(script, "4")
    assert first + script_run.new_output() == expected
    assert any("draw" in text for text in said(script_run.c.events))


def test_a_change_above_the_failure_resumes_from_before_it(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("x = 1\nprint('a', x)\ny = x * 10\nprint('b', y)\nprint(z)\n")
    assert script_run.c.run_script(str(script), []).status == "error"
    script_run.new_output()
    script.write_text("x = 1\nprint('a', x)\ny = x * 20\nprint('b', y)\nz = 3\nprint(z)\n")
    resumed = script_run.c.resume()
    assert resumed.where.startswith("line 2: print('a', x)")
    assert script_run.new_output() == "b 20\n3\n"


def test_resume_from_a_chosen_checkpoint(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("n = 0\nn += 1\nprint('n', n)\nn += 1\nraise SystemExit(n)\n")
    result = script_run.c.run_script(str(script), [])
    assert result.status == "exit" and result.exit_code == 2
    script_run.new_output()
    target = next(n.id for n in script_run.c.view() if n.site == 1)
    resumed = script_run.c.resume(str(target))
    assert resumed.result.exit_code == 2 and script_run.new_output() == "n 1\n"


def test_script_sees_what_python_gives_it(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "env.py"
    script.write_text(
        "import sys, os\n"
        "here = sys.path[0] == os.path.dirname(__file__)\n"
        "print(__name__, os.path.basename(__file__), sys.argv[1:], here)\n"
        "sys.exit(3)\n"
    )
    result = script_run.c.run_script(str(script), ["a", "--b"])
    assert result.status == "exit" and result.exit_code == 3
    assert script_run.new_output() == "__main__ env.py ['a', '--b'] True\n"


def test_broken_scripts_and_edits_get_one_sentence(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("x = (\n")
    with pytest.raises(ForkpointError, match=r"s\.py, line 1: '\(' was never closed"):
        script_run.c.run_script(str(script), [])
    script.write_text("x = 1\nprint(x)\nprint(y)\n")
    assert script_run.c.run_script(str(script), []).status == "error"
    script.write_text("x = 1\nprint(x)\nprint(y\n")
    with pytest.raises(ForkpointError, match="nothing was lost"):
        script_run.c.resume()
    assert script_run.c.pm_exec("print(x)", 0) == (True, "")  # the session is kept
    script.unlink()
    with pytest.raises(ForkpointError, match="does not exist"):
        script_run.c.resume()
    script.write_text("x = 1\nprint(x)\nprint('y')\n")
    assert script_run.c.resume().result.status == "exit"


STATEMENT = st.sampled_from(
    [
        "a = a + 1",
        "b = [a, a * 2]",
        "b.append(len(b))",
        "a = sum(b) % 97",
        "def f(v):\n    return v * 3",
        "a = f(a)",
        "for i in range(3):\n    a += i",
        "if a % 2:\n    a //= 2\nelse:\n    a += 7",
    ]
)


@settings(
    max_examples=int(os.environ.get("FORKPOINT_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    body=st.lists(STATEMENT, min_size=2, max_size=7),
    data=st.data(),
)
def test_differential_resume(body: list[str], data: st.DataObject, tmp_path: Path, output: Path) -> None:
    """Random programs fail at a random statement; the fix (and an edit of f) is resumed."""
    header = ["a = 1", "b = []", "def f(v):\n    return v + 1"]
    fail_at = data.draw(st.integers(0, len(body)))
    lines = header + [f"{s}\nprint('{i}', a, b)" for i, s in enumerate(body)]
    broken = lines[: len(header) + fail_at] + ["raise RuntimeError('bug')"] + lines[len(header) + fail_at :]
    fixed = list(broken)
    fixed[len(header) + fail_at] = "print('fixed')"
    if data.draw(st.booleans()):
        fixed[2] = "def f(v):\n    return v * 5 - 1"  # a body change: swapped, not re-run
    script = tmp_path / "prog.py"
    script.write_text("\n".join(broken) + "\n")
    output.write_text("")
    out = os.open(output, os.O_WRONLY | os.O_APPEND)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with Controller(stdio=(null, out, out)) as c:
            run = Run(c, output)
            assert c.run_script(str(script), []).status == "error"
            before = run.new_output()
            script.write_text("\n".join(fixed) + "\n")
            resumed = c.resume()
            assert resumed.result.status == "exit", resumed.result.traceback
            after = run.new_output()
    finally:
        os.close(out)
        os.close(null)
    expected = fresh_run(script)
    assert expected.endswith(after)
    if "v * 5" not in fixed[2]:
        assert before + after == expected  # nothing above the failure changed: resumed right there


def test_batch_resumes_inside_the_failed_call_with_new_code(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "batch.py"
    shutil.copy(PROGRAMS / "batch.py", script)
    result = script_run.c.run_script(str(script), ["6"], entries=("process",), every_hit=True)
    assert result.status == "error" and "IndexError" in (result.traceback or "")
    assert script_run.new_output() == "done 1\ndone 2\ndone 3\n"
    shutil.copy(PROGRAMS / "batch_fixed.py", script)
    resumed = script_run.c.resume()
    assert resumed.where == "the entry of call 4 of process()"
    assert resumed.result.status == "exit" and resumed.result.exit_code == 0
    after = script_run.new_output()
    fresh = fresh_run(script, "6")
    # From call 4 on, exactly what a fresh run prints, except that calls 1-3 ran the old code
    # (their names stayed unformatted), which forkpoint says, with how to redo them.
    old_calls = fresh[fresh.index("done 4") :]
    for i in (1, 2, 3):
        old_calls = old_calls.replace(f"'video{i}.mp4:", "'video{}.mp4:")
    assert after == old_calls
    notices = said(script_run.c.events)
    assert any(
        "calls 1-3 of process() in this statement ran the old code; resume --from" in n for n in notices
    )


def test_removing_the_resumed_function_falls_back(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "batch.py"
    shutil.copy(PROGRAMS / "batch.py", script)
    assert script_run.c.run_script(str(script), ["5"], entries=("process",)).status == "error"
    script_run.new_output()
    text = (PROGRAMS / "batch_fixed.py").read_text().replace("def process(video):", "def handle(video):")
    script.write_text(text.replace("results.append(process(video))", "results.append(handle(video))"))
    resumed = script_run.c.resume()
    assert resumed.where == "line 3: import sys"  # before the changed def: everything after re-runs
    assert script_run.new_output() == fresh_run(script, "5")


def test_entry_sites_keep_generators_out(tmp_path: Path) -> None:
    from forkpoint.instrument.rewrite import (
        CALLED_NAME,
        CONTINUE_NAME,
        ENTRY_NAME,
        SITE_NAME,
        Sites,
        compile_script,
    )

    source = "def gen():\n    yield 1\n\ndef f(a, *rest, k=2, **kw):\n    return a, rest, k, kw\n"
    code = compile_script(source, "<prog>", sites=Sites(entries=frozenset({"gen", "f"})))
    seen: list[str] = []
    ns: dict[str, object] = {
        SITE_NAME: lambda i, light: None,
        CALLED_NAME: lambda q: None,
        ENTRY_NAME: lambda q, args: seen.append(q) or ns[CONTINUE_NAME],
        CONTINUE_NAME: object(),
    }
    exec(code, ns)
    assert list(ns["gen"]()) == [1]  # type: ignore[operator]
    assert ns["f"](1, 2, k=3, z=4) == (1, (2,), 3, {"z": 4})  # type: ignore[operator]
    assert seen == ["f"]


def test_a_hot_site_keeps_a_bounded_number_of_checkpoints(tmp_path: Path, output: Path) -> None:
    script = tmp_path / "hot.py"
    script.write_text(
        "def f(i):\n    return i * 2\n\ntotal = 0\nfor i in range(500):\n    total += f(i)\nprint(total)\n"
    )
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with Controller(stdio=(out, out, out), max_checkpoints=40) as c:
            result = c.run_script(str(script), [], entries=("f",), every_hit=True)
            assert result.status == "exit" and result.exit_code == 0
            assert len(c.view().alive()) <= 40
            kept = sorted(n.id for n in c.view().alive())
            assert kept[-8:] == list(range(kept[-1] - 7, kept[-1] + 1))  # the latest ones, dense
            assert len(said(c.events, Evicted)) == 1  # said once, not per checkpoint
    finally:
        os.close(out)
    assert output.read_text() == "249500\n"


HOT = """\
import time

def step(i):
    x = i * 2
    if i == {fail}:
        raise ValueError(i)
    print("step", i, x)
    return x

def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

total = 0
for i in range({n}):
    busy({work})
    total += step(i)
print("total", total)
"""


def test_a_hot_site_is_spaced_out_and_resume_is_still_a_fresh_runs(script_run: Run, tmp_path: Path) -> None:
    """Issue 12: a site hit in a tight loop takes its first hit and then one checkpoint per
    ~20 pauses of work, the skipped hits counted on the next checkpoint; the resume goes on from
    the latest one taken, says how many hits run again, and prints what a fresh run prints."""
    script = tmp_path / "hot.py"
    # 0.3 ms of work per hit: 0.45 s before the failure, room for two checkpoints even when a
    # busy machine makes a pause 10 ms (at 0.1 ms, a pause over 4 ms left only the first)
    script.write_text(HOT.format(fail=1500, n=2000, work=0.0003))
    result = script_run.c.run_script(str(script), [], lines=(4,))
    assert result.status == "error" and "ValueError: 1500" in (result.traceback or "")
    first = script_run.new_output()
    in_calls = [n for n in script_run.c.view().nodes.values() if n.entry == "step"]
    assert 2 <= len(in_calls) < 150, len(in_calls)  # 1,501 hits at 0.3 ms each: not one fork each
    assert in_calls[0].call == 1 and [n.call for n in in_calls] == sorted(n.call for n in in_calls)
    for before, node in zip(in_calls, in_calls[1:], strict=False):
        assert node.skipped == node.call - before.call - 1  # each hit between two is counted
    script.write_text(HOT.format(fail=-1, n=2000, work=0.0003))
    resumed = script_run.c.resume()
    assert resumed.result.status == "exit"
    assert resumed.where.startswith("before line 4 in call ")
    call = int(resumed.where.split("in call ")[1].split()[0])
    told = [e for e in script_run.c.events if type(e).__name__ == "Resuming"]
    assert told and told[-1].hits_again == 1501 - call  # the later hits, up to the failing call 1501
    after = script_run.new_output()
    fresh = fresh_run(script)
    assert after == fresh[fresh.index(f"step {call - 1} ") :]  # from that call (i = call - 1) on
    assert first.startswith(fresh[: fresh.index(f"step {call - 1} ")])


def test_every_hit_takes_a_checkpoint_at_every_hit(script_run: Run, tmp_path: Path) -> None:
    script = tmp_path / "hot.py"
    script.write_text(HOT.format(fail=40, n=100, work=0))
    result = script_run.c.run_script(str(script), [], lines=(4,), every_hit=True)
    assert result.status == "error"
    in_calls = [n for n in script_run.c.view().nodes.values() if n.entry == "step"]
    assert [n.call for n in in_calls] == list(range(1, 42)) and not any(n.skipped for n in in_calls)


def test_checkpoints_say_how_many_hits_were_skipped_before_them(tmp_path: Path) -> None:
    import io

    from forkpoint.shell.render import Renderer
    from forkpoint.tree import CheckpointState, CheckpointView

    view = CheckpointView(
        id=3, parent=2, pid=1, source="", title="before line 4 in call 9 of step()", label=None,
        at_rest=False, created=0.0, state=CheckpointState.ALIVE, memory=1 << 20, site=1, entry="step",
        line=4, call=9, skipped=7,
    )  # fmt: skip
    out = io.StringIO()
    Renderer(out).checkpoints([view], 3)
    assert "before line 4 in call 9 of step()  (+7 hits skipped before it)" in out.getvalue()
