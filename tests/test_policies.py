"""Pure tests of the engine's policies: where a resume goes on, and the Ctrl-C machine.
No process is started: the tree, the script's versions and the clock are plain values."""

from __future__ import annotations

import textwrap

from hypothesis import given
from hypothesis import strategies as st

from forkpoint.controller.interrupts import PATIENCE, Action, Interrupts, Stage
from forkpoint.controller.resume_policy import Blocker, ResumeCheck, Why, choose_resume, old_calls
from forkpoint.controller.script import Script
from forkpoint.tree import CheckpointTree

V0 = textwrap.dedent(
    """\
    def f(x):
        return x + 1
    a = 1
    b = f(a)
    print(b)
    """
)


def script_tree(source: str = V0) -> tuple[Script, CheckpointTree, list[int]]:
    """A script that ran to its end with a checkpoint after each top-level statement."""
    script = Script("/nowhere/s.py", [], [source], 0.0)
    tree = CheckpointTree()
    tree.add(None, 1, "")
    ids = []
    called = {2: ("f",)}  # statement 2 made the first call of f
    for site in range(4):
        node = tree.add(len(tree.nodes) - 1, 10 + site, "", at_rest=False)
        node.site, node.version, node.called = site, 0, called.get(site, ())
        ids.append(node.id)
    return script, tree, ids


def choose(source: str, new: str, current: int | None = None) -> tuple[int, tuple[int, Blocker] | None]:
    script, tree, ids = script_tree(source)
    choice = choose_resume(tree, ids[-1] if current is None else current, ResumeCheck(script, new, {}))
    return choice.node.id, choice.blocked


def test_an_unchanged_script_resumes_from_the_latest_checkpoint() -> None:
    _, _, ids = script_tree()
    assert choose(V0, V0) == (ids[-1], None)


def test_a_function_that_already_ran_pushes_the_resume_before_its_first_call() -> None:
    _, _, ids = script_tree()
    node, blocked = choose(V0, V0.replace("x + 1", "x + 2"))
    assert node == ids[1]  # after `a = 1`, before `b = f(a)` called f
    assert blocked == (ids[-1], Blocker(Why.RAN_OLD_CODE, ("f",)))


def test_a_top_level_edit_keeps_only_what_ran_before_it() -> None:
    _, _, ids = script_tree()
    node, blocked = choose(V0, V0.replace("a = 1", "a = 2"))
    assert node == ids[0]
    assert blocked == (ids[-1], Blocker(Why.TOP_LEVEL))


def test_an_edit_of_the_first_statement_starts_over() -> None:
    assert choose(V0, V0.replace("def f(x):", "def f(x, y=0):")) == (0, None)


def test_evicted_checkpoints_are_skipped() -> None:
    script, tree, ids = script_tree()
    tree[ids[-1]].ended()
    choice = choose_resume(tree, ids[-1], ResumeCheck(script, V0, {}))
    assert choice.node.id == ids[-2] and choice.blocked is None


def test_a_changed_function_the_checkpoint_is_in_can_be_resumed_at_its_entry() -> None:
    script, tree, ids = script_tree()
    entry = tree.add(ids[1], 20, "", at_rest=False)  # the entry of call 1 of f, in statement 2
    entry.site, entry.version, entry.entry, entry.call = 2, 0, "f", 1
    check = ResumeCheck(script, V0.replace("x + 1", "x + 2"), {})
    assert choose_resume(tree, entry.id, check).node is entry
    assert check.why_not(entry, {"f"}) is None  # its own first call is the one resumed
    gone = ResumeCheck(script, V0.replace("def f(x):\n    return x + 1\n", "def g(x):\n    return x\n"), {})
    assert gone.why_not(entry, set()) == Blocker(Why.GONE_FUNCTION, ("f",))
    assert choose_resume(tree, entry.id, gone).node.id == 0  # nothing can go on: start over


def test_old_calls_counts_earlier_calls_in_the_statement_and_names_the_redo() -> None:
    _, tree, ids = script_tree()
    parent = ids[1]
    calls = []
    for call in (1, 2, 3):
        node = tree.add(parent, 30 + call, "", at_rest=False)
        node.site, node.version, node.entry, node.call = 2, 0, "f", call
        parent = node.id
        calls.append(node)
    found = old_calls(tree, calls[-1])
    assert found is not None
    assert (found.function, found.calls, found.redo_from) == ("f", 2, ids[1])
    assert old_calls(tree, calls[0]) is None  # the first call: nothing ran the old code
    assert old_calls(tree, tree[ids[2]]) is None  # not in a call


# ----------------------------------------------------------------- Ctrl-C


def test_first_ctrl_c_is_passed_on_then_the_user_is_told_once() -> None:
    m = Interrupts()
    assert m.step(0.0) is None and m.stage is Stage.QUIET
    m.press()
    assert m.step(10.0) is Action.FORWARD and m.stage is Stage.ASKED
    assert m.step(10.0 + PATIENCE / 2) is None
    assert m.step(10.0 + PATIENCE * 2) is Action.WARN and m.stage is Stage.WARNED
    assert m.step(10.0 + PATIENCE * 3) is None  # told once
    assert not m.killed


def test_a_second_ctrl_c_kills() -> None:
    m = Interrupts()
    m.press()
    m.step(0.0)
    m.press()
    assert m.step(0.1) is Action.KILL and m.stage is Stage.KILLING and m.killed


def test_two_presses_between_steps_kill_at_once() -> None:
    m = Interrupts()
    m.press()
    m.press()
    assert m.step(0.0) is Action.KILL


def test_reset_starts_a_new_input_quiet() -> None:
    m = Interrupts()
    m.press()
    m.press()
    m.step(0.0)
    m.reset()
    assert (m.stage, m.killed, m.step(100.0)) == (Stage.QUIET, False, None)


@given(st.lists(st.sampled_from(["press", "tick"]), max_size=30))
def test_the_machine_never_kills_without_two_presses_nor_warns_twice(script: list[str]) -> None:
    m, now, actions = Interrupts(), 0.0, []
    for step in script:
        if step == "press":
            m.press()
        now += 0.7
        if (action := m.step(now)) is not None:
            actions.append(action)
    presses = script.count("press")
    assert (Action.KILL in actions) == (presses >= 2 and m.killed)
    assert actions.count(Action.WARN) <= 1 and actions.count(Action.FORWARD) <= 1
    assert actions.count(Action.KILL) <= 1 or presses > 2
