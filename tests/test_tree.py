"""Pure tests of the checkpoint tree and its eviction policy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkpoint.errors import ForkpointError
from forkpoint.tree import DENSE, CheckpointTree, choose_evictions


def chain(n: int) -> CheckpointTree:
    tree = CheckpointTree()
    tree.add(None, 100, "")
    for i in range(1, n):
        tree.add(i - 1, 100 + i, f"x = {i}")
    return tree


def test_ids_are_never_reused_and_zero_is_the_root() -> None:
    tree = chain(3)
    tree[2].ended()
    node = tree.add(1, 999, "y = 1")
    assert node.id == 3 and tree[0].parent is None


def test_resolve_id_relative_and_label() -> None:
    tree = chain(6)
    tree[2].label = "loaded"
    assert tree.resolve("4", 5).id == 4
    assert tree.resolve("-2", 5).id == 3
    assert tree.resolve("loaded", 5).id == 2


@pytest.mark.parametrize(
    "ref, message",
    [
        ("9", "there is no checkpoint [9]."),
        ("-7", "[5] has only 5 checkpoints before it, not 7."),
        ("nope", "no checkpoint is labelled 'nope'."),
    ],
)
def test_resolve_errors_say_what_is_wrong(ref: str, message: str) -> None:
    with pytest.raises(ForkpointError) as info:
        chain(6).resolve(ref, 5)
    assert info.value.message == message


def test_evicted_checkpoint_cannot_be_rewound_to() -> None:
    tree = chain(4)
    tree[1].ended()
    with pytest.raises(ForkpointError, match=r"\[1\] was evicted"):
        tree.resolve("1", 3)


def test_latest_label_wins() -> None:
    tree = chain(5)
    tree[1].label = tree[3].label = "item"
    assert tree.resolve("item", 4).id == 3


def test_at_rest_base_skips_mid_input_checkpoints() -> None:
    tree = chain(3)
    mid = tree.add(2, 200, "loop", at_rest=False)
    mid2 = tree.add(mid.id, 201, "loop", at_rest=False)
    assert tree.at_rest_base(mid2.id) == 2


def test_off_branch_goes_first_then_old_sparse() -> None:
    tree = chain(40)
    side = tree.add(5, 999, "side")
    evict = choose_evictions(tree, 39, budget=10**12, max_count=30)
    assert evict[0] == side.id
    assert len(evict) == len(tree.alive()) - 30
    kept = {n.id for n in tree.alive()} - set(evict)
    assert set(range(39 - DENSE + 1, 40)) <= kept  # recent ones stay dense


def test_memory_budget_evicts_until_under() -> None:
    tree = chain(10)
    for node in tree.alive():
        node.memory = 100
    evict = choose_evictions(tree, 9, budget=550, max_count=100)
    assert 1000 - 100 * len(evict) <= 550
    assert 0 not in evict and 9 not in evict


@settings(max_examples=200)
@given(
    parents=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=60),
    labels=st.sets(st.integers(min_value=0, max_value=60)),
    sizes=st.lists(st.integers(min_value=0, max_value=1000), min_size=61, max_size=61),
    max_count=st.integers(min_value=2, max_value=30),
    budget=st.integers(min_value=0, max_value=20000),
    current_pick=st.integers(min_value=0),
)
def test_eviction_keeps_what_it_promises(
    parents: list[int], labels: set[int], sizes: list[int], max_count: int, budget: int, current_pick: int
) -> None:
    tree = CheckpointTree()
    tree.add(None, 1, "")
    for i, p in enumerate(parents, start=1):
        tree.add(p % i, i + 1, f"x = {i}")
    for node in tree.alive():
        node.memory = sizes[node.id]
        if node.id in labels:
            node.label = f"l{node.id % 3}"
    current = current_pick % len(tree.nodes)
    evict = choose_evictions(tree, current, budget, max_count)
    assert len(set(evict)) == len(evict)
    protected = {0, current}
    for label in ("l0", "l1", "l2"):
        latest = tree.latest_with_label(label)
        if latest is not None:
            protected.add(latest.id)
    assert not protected & set(evict)
    left = [n for n in tree.alive() if n.id not in evict]
    if len(left) > max_count or sum(n.memory or 0 for n in left) > budget:
        # Only protected checkpoints may remain when the limits cannot be met.
        assert {n.id for n in left} <= protected
    else:
        # It evicts no more than it must: putting back the last one breaks a limit.
        if evict:
            last = tree[evict[-1]]
            back = left + [last]
            assert len(back) > max_count or sum(n.memory or 0 for n in back) > budget


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["add", "end", "ask"])), max_size=120))
def test_the_indexes_answer_as_a_walk_of_every_node_does(steps: list[tuple[int, str]]) -> None:
    """``alive``, ``children`` and ``held_chain`` answer from indexes (kept so that an input's
    cost does not grow with the inputs run); whatever the sequence of checkpoints taken and
    ended, and of questions asked between them, they say what walking every node says."""
    tree = CheckpointTree()
    tree.add(None, 1, "")
    for pick, what in steps:
        ids = list(tree.nodes)
        cid = ids[pick % len(ids)]
        if what == "add":
            tree.add(cid, 1, "")
        elif what == "end":
            tree[cid].ended()
        else:
            assert [n.id for n in tree.held_chain(cid)] == [
                n.id for n in tree.chain(cid) if n.usable or n.id == cid
            ]
    assert [n.id for n in tree.alive()] == [n.id for n in tree.nodes.values() if n.alive]
    for cid in tree.nodes:
        assert [n.id for n in tree.children(cid)] == [n.id for n in tree.nodes.values() if n.parent == cid]
        assert [n.id for n in tree.held_chain(cid)] == [
            n.id for n in tree.chain(cid) if n.usable or n.id == cid
        ]


def test_a_save_keeps_the_branch_thinned_labels_first() -> None:
    """:save keeps the checkpoint, the latest of each label, then the branch as eviction thins
    it (dense recent, power-of-two further back), in that order; --only the one, --all every
    one that can be saved (taken between inputs, held by a process or by the last save)."""
    from forkpoint.controller.save_policy import SaveScope, choose_saved

    tree = chain(40)
    tree[5].label = "loaded"
    tree[30].at_rest = False
    for cid in (20, 21):
        tree[cid].ended()
    order = choose_saved(tree, 39, SaveScope.BRANCH)
    assert order[:2] == [39, 5]
    # depths count what can be saved (30 is mid-input, 20 and 21 gone): 8, 16 and 32 are 31, 22, 4
    assert order[2:] == [38, 37, 36, 35, 34, 33, 32, 31, 22, 4]
    assert choose_saved(tree, 39, SaveScope.ONLY) == [39]
    every = choose_saved(tree, 39, SaveScope.ALL)
    assert every == [c for c in range(39, -1, -1) if c not in (20, 21, 30)]
    assert 20 in choose_saved(tree, 39, SaveScope.ALL, carried={20})  # its last save has it
