"""Pure tests of the shell's input handling and rendering helpers."""

from __future__ import annotations

import pytest

from forkpoint.cli import parse_size
from forkpoint.errors import ForkpointError
from forkpoint.shell.render import human_bytes, tree_lines
from forkpoint.shell.repl import input_is_complete, next_indent
from forkpoint.tree import CheckpointTree


@pytest.mark.parametrize(
    "text, complete",
    [
        ("x = 1", True),
        ("", True),
        (":rewind 3", True),
        ("if x:", False),
        ("def f():\n    return 1", False),
        ("def f():\n    return 1\n", True),
        ("for i in r:\n    pass\n    ", True),
        ("x = (1,", False),
        ("x = 1\ny = 2", True),
        ("a b", True),  # a syntax error runs, so the head can show it
        ("@dec", False),
    ],
)
def test_enter_runs_only_complete_input(text: str, complete: bool) -> None:
    assert input_is_complete(text) is complete


@pytest.mark.parametrize(
    "line, indent",
    [
        ("if x:", "    "),
        ("    y = 1", "    "),
        ("    return y", ""),
        ("def f():  # c", "    "),
        ("x = 1", ""),
    ],
)
def test_auto_indent(line: str, indent: str) -> None:
    assert next_indent(line) == indent


def test_tree_keeps_chains_flat_and_indents_branches() -> None:
    tree = CheckpointTree()
    tree.add(None, 1, "")
    tree.add(0, 2, "a = 1")
    tree.add(1, 3, "b = 2")
    tree.add(1, 4, "b = 3")
    tree.add(3, 5, "c = 4")
    tree[2].ended()
    assert tree_lines(tree.view(4)) == [
        "[0] (fresh interpreter)",
        "[1] a = 1",
        "├─[2] b = 2  (evicted)",
        "└─[3] b = 3",
        "  [4] c = 4  <- head",
    ]


def test_sizes() -> None:
    assert parse_size("4G") == 4 << 30
    assert parse_size("512m") == 512 << 20
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size("25%", total=1000) == 250
    assert human_bytes(803_400_000) == "803.4 MB"
    with pytest.raises(ForkpointError, match="is not a size"):
        parse_size("lots")
