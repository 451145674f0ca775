"""Which checkpoints a save of a shell session keeps, and in which order they are written.

A session saved with one checkpoint came back with no past: a rewind after the restore had
nothing to go to. A save keeps the branch instead, thinned as eviction thins it: the
checkpoint saved, the latest of each label, the most recent ones and older ones at
power-of-two distances (``tree.thinned_branch``). Only checkpoints taken between inputs can
be saved (a mid-input one is a paused statement, not a session), and only those a process
holds or that the last save of the same session already wrote (``carried``): those cost no
dump at all.

The order is the order of importance, and the save writes in that order, so that a disk
budget that runs out drops the least important: the checkpoint saved first, labels next,
then the branch nearest first.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import Enum

from forkpoint.tree import CheckpointTree, thinned_branch

__all__ = ["MAX_BRANCH", "SaveScope", "choose_saved"]

MAX_BRANCH = 32  # checkpoints a thinned branch saves at most, besides labelled ones


class SaveScope(Enum):
    BRANCH = "branch"  # the checkpoint and its branch, thinned (the default)
    ALL = "all"  # every checkpoint of the branch that can be saved
    ONLY = "only"  # the checkpoint alone


def choose_saved(
    tree: CheckpointTree, cid: int, scope: SaveScope, carried: Collection[int] = ()
) -> list[int]:
    """Ids to save for checkpoint ``cid``, most important first; ``cid`` is always first."""
    if scope is SaveScope.ONLY:
        return [cid]
    branch = [n.id for n in tree.chain(cid) if n.id == cid or n.at_rest and (n.alive or n.id in carried)]
    if scope is SaveScope.ALL:
        return branch
    labelled: dict[str, int] = {}
    for node_id in branch:  # nearest first: the latest of each label is met first
        label = tree[node_id].label
        if label and label not in labelled:
            labelled[label] = node_id
    dense, sparse = thinned_branch(branch)
    order = [cid, *labelled.values()]
    thinned = [i for i in dense + sparse if i not in order][: max(MAX_BRANCH - len(order), 0)]
    return list(dict.fromkeys(order + thinned))
