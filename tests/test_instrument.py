"""Pure tests of sites and source diffs, on real before/after program files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkpoint.errors import ForkpointError
from forkpoint.instrument.diff import diff_sources, functions
from forkpoint.instrument.sites import resolve

PROGRAMS = Path(__file__).parent / "programs"
BEFORE = (PROGRAMS / "faces_before.py").read_text()
AFTER = (PROGRAMS / "faces_after.py").read_text()


def test_formatting_and_comments_are_no_change_but_code_is() -> None:
    d = diff_sources(BEFORE, AFTER)
    assert d.changed_functions == {"Painter.draw"}
    assert d.first_changed_statement == 3  # the class statement holding draw()
    assert not d.added_functions and not d.removed_functions


def test_identical_code_is_unchanged() -> None:
    assert diff_sources(BEFORE, BEFORE + "\n# trailing comment\n").unchanged


def test_added_and_removed_functions() -> None:
    d = diff_sources("def f(): pass\n", "def g(): pass\n")
    assert d.added_functions == {"g"} and d.removed_functions == {"f"} and d.first_changed_statement == 0


def test_broken_edit_is_a_syntax_error_with_its_position() -> None:
    with pytest.raises(SyntaxError) as info:
        diff_sources(BEFORE, "def f(:\n")
    assert info.value.lineno == 1


def test_qualnames_of_nested_functions_and_methods() -> None:
    tree = ast.parse("class A:\n    def m(self):\n        def inner(): pass\n\ndef f():\n    pass\n")
    assert set(functions(tree)) == {"A.m", "A.m.<locals>.inner", "f"}


STATEMENTS = st.lists(
    st.sampled_from(
        ["x = 1", "y = x + 2", "print(x)", "def f(a):\n    return a * 2", "z = [i for i in range(3)]"]
    ),
    min_size=1,
    max_size=8,
)


@given(STATEMENTS, st.data())
def test_blank_lines_and_comments_never_count(statements: list[str], data: st.DataObject) -> None:
    plain = "\n".join(statements) + "\n"
    noisy = "\n\n# comment\n".join(s + "   # trailing" for s in statements) + "\n"
    assert diff_sources(plain, noisy).unchanged


@given(STATEMENTS, st.data())
def test_the_first_changed_statement_is_found(statements: list[str], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(statements) - 1))
    edited = statements[:i] + ["w = 'edited'"] + statements[i + 1 :]
    d = diff_sources("\n".join(statements) + "\n", "\n".join(edited) + "\n")
    assert d.first_changed_statement == (None if statements[i] == "w = 'edited'" else i)


def sources() -> dict[str, str]:
    return {
        str(PROGRAMS / "faces_before.py"): BEFORE,
        str(PROGRAMS / "pkg" / "__init__.py"): "def detect(): pass\n",
    }


def test_function_specs() -> None:
    (draw,) = resolve("Painter.draw", sources())
    assert draw.function == "Painter.draw" and draw.line == 12
    assert {s.function for s in resolve("detect", sources())} == {"detect"}
    assert len(resolve("detect", sources())) == 2  # the script's and the package's
    (only,) = resolve("pkg:detect", sources())
    assert only.path.endswith("pkg/__init__.py")
    (draw_by_name,) = resolve("draw", sources())
    assert draw_by_name.function == "Painter.draw"


def test_line_specs_by_relative_absolute_and_suffix_paths() -> None:
    cwd = str(PROGRAMS.parent)
    for file in ("programs/faces_before.py", str(PROGRAMS / "faces_before.py"), "faces_before.py"):
        (site,) = resolve(f"{file}:17", sources(), cwd=cwd)
        assert site.line == 17 and site.function is None


@pytest.mark.parametrize(
    "spec, message, hint",
    [
        ("detcet", "--checkpoint-at detcet names no function.", "did you mean detect?"),
        ("faces_before.py:14", "no statement starts on line 14 of programs/faces_before.py.", "line 16"),
        ("face.py:3", "face.py is not one of the files forkpoint runs.", "it is not the script"),
    ],
)
def test_specs_that_name_nothing_say_so(spec: str, message: str, hint: str) -> None:
    with pytest.raises(ForkpointError) as info:
        resolve(spec, sources(), cwd=str(PROGRAMS.parent))
    assert info.value.message == message
    assert hint in (info.value.hint or "")


def run_rewritten(source: str, start: int = 0) -> tuple[list[int], dict[str, object]]:
    from forkpoint.instrument.rewrite import CALLED_NAME, SITE_NAME, compile_script

    hits: list[int] = []
    ns: dict[str, object] = {
        SITE_NAME: lambda i, light: hits.append(i),
        CALLED_NAME: lambda name: None,
        "__name__": "__main__",
    }
    exec(compile_script(source, "<prog>", start), ns)
    return hits, ns


def test_sites_between_definitions_are_light() -> None:
    """A checkpoint between two defs, classes or imports may be skipped when cheap; the one
    before a statement that does work never is."""
    from forkpoint.instrument.rewrite import CALLED_NAME, SITE_NAME, compile_script

    source = "import os\ndef f(): pass\nclass C: pass\nx = f()\ndef g(): pass\ny = 2\nz = 3\n"
    seen: list[tuple[int, bool]] = []
    ns: dict[str, object] = {SITE_NAME: lambda i, light: seen.append((i, light)), CALLED_NAME: lambda n: None}
    exec(compile_script(source, "<prog>"), ns)
    assert seen == [(0, True), (1, True), (2, False), (3, False), (4, False), (5, False)]


def test_sites_follow_each_top_level_statement_but_the_last() -> None:
    hits, ns = run_rewritten(
        '"""doc"""\nfrom __future__ import annotations\nx = 1\nfor i in range(3):\n    x += i\ny = x\n'
    )
    assert hits == [2, 3] and ns["y"] == 4


def test_rewritten_code_keeps_source_positions() -> None:
    from forkpoint.instrument.rewrite import CALLED_NAME, SITE_NAME, compile_script

    code = compile_script("x = 1\n\ndef f():\n    return 1 / 0\n\nf()\n", "<prog>")
    ns: dict[str, object] = {SITE_NAME: lambda i, light: None, CALLED_NAME: lambda name: None}
    with pytest.raises(ZeroDivisionError) as info:
        exec(code, ns)
    import traceback

    lines = [frame.lineno for frame in traceback.extract_tb(info.tb)]
    assert lines[-2:] == [6, 4]


def test_a_remainder_runs_the_statements_after_an_index() -> None:
    hits, ns = run_rewritten("a = 1\nb = 2\nc = 3\nd = 4\n", start=2)
    assert hits == [2] and "a" not in ns and ns["d"] == 4


def test_only_function_body_changes_are_swappable() -> None:
    base = "x = 1\ndef f():\n    return 1\nclass C:\n    def m(self):\n        return 2\ny = f()\n"
    body_only = base.replace("return 1", "return 10").replace("return 2", "return 20")
    assert diff_sources(base, body_only).first_unswappable is None
    assert diff_sources(base, body_only).first_changed_statement == 1
    new_method = base.replace("        return 2\n", "        return 2\n    def n(self):\n        pass\n")
    assert diff_sources(base, new_method).first_unswappable == 2
    assert diff_sources(base, base.replace("y = f()", "y = f() + 1")).first_unswappable == 3
