"""The user's own modules under `forkpoint run`: sites in them, and resume after editing them.

Each test checks against a fresh run of the edited program: what resume prints from the
checkpoint on is what a fresh run prints from there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ScriptRun

from forkpoint.controller import Controller

HELPER = """\
SCALE = 3


def work(items):
    out = []
    for x in items:
        y = x * SCALE
        print("item", x, y)
        out.append(check(y))
    return out


def check(y):
    if y > 10:
        raise ValueError(y)
    return y
"""

MAIN = """\
import sys

sys.path.insert(0, sys.argv[1])
import helper

print("start")
print(helper.work([1, 2, 3, 4, 5]))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.py").write_text(HELPER)
    (tmp_path / "main.py").write_text(MAIN)
    return tmp_path


class Run(ScriptRun):
    def __init__(self, c: Controller, output: Path, project: Path) -> None:
        super().__init__(c, output)
        self.project = project

    def start(self, **sites: object) -> str:
        # Every hit checkpointed: these tests say which call a resume starts in.
        lib = [str(self.project / "lib")]
        result = self.c.run_script(str(self.project / "main.py"), lib, every_hit=True, **sites)  # type: ignore[arg-type]
        assert result.status == "error", result
        return self.output.read_text()


@pytest.fixture
def run(project: Path, output: Path, controller: Controller) -> Run:
    return Run(controller, output, project)


def fresh(project: Path) -> str:
    args = [sys.executable, str(project / "main.py"), str(project / "lib")]
    return subprocess.run(args, capture_output=True, text=True, timeout=60).stdout


def edit(project: Path, old: str, new: str) -> None:
    path = project / "lib" / "helper.py"
    path.write_text(path.read_text().replace(old, new))


def test_a_line_site_in_a_watched_module_resumes_inside_its_call(run: Run, project: Path) -> None:
    helper = str(project / "lib" / "helper.py")
    before = run.start(lines={helper: [7]}, watch=[str(project / "lib")])
    edit(project, "if y > 10:", "if y > 100:")
    edit(project, 'print("item", x, y)', 'print("item", x, y, "new")')
    where, after = run.resumed()
    # the latest checkpoint followed the first call of check(), which changed: one before it
    assert where.startswith("before line 7 of helper.py in call 1 of helper:work(): y = x * SCALE")
    assert any("helper:check() had already run the old code" in n for n in run.notices())
    assert any("new code for helper:check, helper:work" in n for n in run.notices())
    expected = fresh(project)
    assert expected.endswith(after) and before.startswith(expected[: len(expected) - len(after)])
    assert not (project / "lib" / "__pycache__").exists()  # compiled by forkpoint, nothing cached


def test_a_change_outside_a_modules_functions_resumes_before_its_import(run: Run, project: Path) -> None:
    run.start(watch=[str(project / "lib")])
    edit(project, "SCALE = 3", "SCALE = 2")
    where, after = run.resumed()
    assert where == "line 3: sys.path.insert(0, sys.argv[1])"  # the import runs again
    assert any(
        "module helper changed outside its functions, and it had been imported" in n for n in run.notices()
    )
    assert after == fresh(project)


def test_modules_outside_the_script_folder_and_watched_paths_are_left_alone(run: Run, project: Path) -> None:
    outside = project.parent / f"{project.name}-outside"
    outside.mkdir()
    (outside / "other.py").write_text("def f():\n    return 1\n")
    main = project / "main.py"
    main.write_text(
        MAIN.replace("import helper", f"sys.path.insert(0, {str(outside)!r})\nimport other, helper")
    )
    run.start()
    assert run.c.script is not None
    assert set(run.c.script.modules.values()) == {"helper"}  # lib/ is under the script's folder


@pytest.mark.pty
def test_watch_on_the_command_line(tmp_path: Path, isolated: str) -> None:
    from terminal import Terminal, env_for

    lib, app = tmp_path / "lib", tmp_path / "app"
    lib.mkdir()
    app.mkdir()
    (lib / "helper.py").write_text(HELPER)
    (app / "main.py").write_text(MAIN)
    forkpoint = str(Path(sys.executable).with_name("forkpoint"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [forkpoint, "run", "main.py", *args, "--on-error", "exit", "--", str(lib)]
        env = env_for(tmp_path, isolated)
        return subprocess.run(command, cwd=app, env=env, capture_output=True, text=True, timeout=60)

    done = run("--checkpoint-at", "helper.py:7")
    assert (
        done.returncode == 2 and "forkpoint: helper.py is not one of the files forkpoint runs." in done.stderr
    )
    args = ["run", "main.py", "--watch", str(lib), "--checkpoint-at", "helper.py:7", "--checkpoint-every-hit"]
    t = Terminal(
        [*args, "--checkpoint-at", "helper:check", "--", str(lib)], env_for(tmp_path, isolated), str(app)
    )
    try:
        assert "ValueError: 12" in t.wait_prompt()
        listing = t.run(":checkpoints")
        assert "before line 7 of helper.py in call 1 of helpe" in listing  # cut to the width
        assert "the entry of call 4 of helper:check()" in listing
        (lib / "helper.py").write_text(HELPER.replace("if y > 10:", "if y > 100:"))
        text = t.finish("resume")
        assert "resuming from [" in text and "the entry of call 4 of helper:check()" in text
        assert text.endswith("[3, 6, 9, 12, 15]\n") and t.child.exitstatus == 0
    finally:
        t.close()
