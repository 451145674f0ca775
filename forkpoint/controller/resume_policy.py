"""Which checkpoints of a script can go on with an edited version of it, and why not.

A checkpoint can continue the new code when everything that had run by then is the same in
the new code, or is code of functions that a swap of ``__code__`` hands the new body (and
that had not been called yet, since their results would be the old code's). At a call's
entry the function itself may have changed: it is called again. Before a line inside a call
the path to that line must be unchanged (``lines.prefix_key``), and the function may not also
be running further out (recursion), since those outer calls would go on with the old code.
A module whose top level changed must not have been imported by then.

Everything here is a pure function of the tree, the script's versions and the new sources:
``choose_resume`` picks the checkpoint, ``old_calls`` says what of the resumed call's
statement ran the old code. Tests call them directly, with no process.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from forkpoint.controller.script import Script
from forkpoint.instrument import lines as sitelines
from forkpoint.instrument.diff import diff_sources, functions
from forkpoint.tree import Checkpoint, CheckpointTree

__all__ = ["Blocker", "Choice", "OldCalls", "ResumeCheck", "Why", "choose_resume", "old_calls"]


class Why(Enum):
    """Why a checkpoint cannot go on with the new code."""

    GONE_FUNCTION = "the function it is in is not in the new code"
    RECURSION = "the function changed and also runs further out"
    EDIT_ABOVE_LINE = "the edit is above its line in its function"
    TOP_LEVEL = "the edit changes top-level code that had run"
    MODULE_TOP_LEVEL = "a module imported by then changed outside its functions"
    OUTER_CHANGED = "a changed function runs further out"
    RAN_OLD_CODE = "changed functions had already run"


@dataclass(frozen=True)
class Blocker:
    """Why not, as data: ``names`` are the functions (or the module) concerned, ``line`` the
    line of a line checkpoint."""

    why: Why
    names: tuple[str, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Choice:
    """Where a resume goes on: ``node`` (checkpoint 0: from the start), and, when a later
    checkpoint could not, which one and why."""

    node: Checkpoint
    blocked: tuple[int, Blocker] | None = None


@dataclass(frozen=True)
class OldCalls:
    """``calls`` earlier calls of ``function`` in the resumed statement ran its old code; a
    resume from ``redo_from`` (None: only a new run) redoes them."""

    function: str
    calls: int
    redo_from: int | None


def choose_resume(tree: CheckpointTree, current: int, check: ResumeCheck) -> Choice:
    """The latest checkpoint on ``current``'s branch that the new code can continue."""
    chain = tree.chain(current)
    ran_by: list[set[str]] = []  # ran_by[i]: functions first called at or before chain[i]
    ran: set[str] = set()
    for node in reversed(chain):
        ran = ran | set(node.called)
        ran_by.append(ran)
    ran_by.reverse()
    blocked = None
    for i, node in enumerate(chain):
        if not node.usable or node.site is None or node.version is None:
            continue
        why = check.why_not(node, ran_by[i])
        if why is None:
            return Choice(node, blocked)
        blocked = blocked or (node.id, why)
    return Choice(tree[0])


def old_calls(tree: CheckpointTree, node: Checkpoint) -> OldCalls | None:
    """Earlier calls of the function ``node`` is the entry (or a line) of, in the same
    top-level statement: they ran the old code. None when there were none."""
    site = node.site
    if node.entry is None or site is None or node.call is None:
        return None
    chain = tree.chain(node.id)[1:]
    earlier = [
        n.call for n in chain if n.entry == node.entry and n.site == site and n.call and n.call < node.call
    ]
    if not earlier:
        return None
    before = next((n for n in chain if n.entry is None and n.site is not None and n.site < site), None)
    return OldCalls(node.entry, node.call - min(earlier), before.id if before else None)


@dataclass
class _Changes:
    """What the edit changed against one version, over the script and its modules."""

    first_unswappable: int | None  # the script's first top-level statement a swap cannot apply
    changed: set[str] = field(default_factory=set)  # function keys, removed ones included
    removed: set[str] = field(default_factory=set)
    reimport: set[str] = field(default_factory=set)  # modules changed outside their functions


class ResumeCheck:
    """Compares the new sources with every version that ran (each diffed and parsed once)."""

    def __init__(self, script: Script, new: str, modules: dict[str, str]) -> None:
        self.script = script
        self.new = new
        self.modules = modules  # path -> new source, for the modules that changed
        self._changes: dict[int, _Changes] = {}
        self._verdicts: dict[tuple[int, str, int], bool] = {}
        self._new_functions: dict[str, dict[str, Any]] = {}  # path -> the new source's functions

    def changes(self, version: int) -> _Changes:
        if version not in self._changes:
            self._changes[version] = self._compare(version)
        return self._changes[version]

    def _compare(self, version: int) -> _Changes:
        script = self.script
        diff = diff_sources(script.versions[version], self.new)
        found = _Changes(diff.first_unswappable)
        found.changed |= diff.changed_functions | diff.removed_functions
        found.removed |= set(diff.removed_functions)
        for path, old in script.module_versions[version].items():
            new = self.modules.get(path, script.module_versions[-1].get(path, old))
            if new == old:
                continue
            name = script.modules.get(path, "")
            module_diff = diff_sources(old, new)
            keys = module_diff.changed_functions | module_diff.removed_functions
            found.changed |= {f"{name}:{q}" for q in keys}
            found.removed |= {f"{name}:{q}" for q in module_diff.removed_functions}
            if module_diff.first_unswappable is not None:
                found.reimport.add(name)
        return found

    def why_not(self, node: Checkpoint, ran: set[str]) -> Blocker | None:
        """None when ``node`` can go on with the new code; else why not.
        ``ran``: functions first called (and modules imported) at or before ``node``."""
        assert node.version is not None and node.site is not None
        changes = self.changes(node.version)
        inside = node.entry
        if inside is not None:
            if inside in changes.removed:
                return Blocker(Why.GONE_FUNCTION, (inside,))
            if inside in changes.changed and inside in node.outer:
                return Blocker(Why.RECURSION, (inside,))
            if node.line is not None and not self._same_way_in(node):
                return Blocker(Why.EDIT_ABOVE_LINE, (inside,), node.line)
        if changes.first_unswappable is not None and changes.first_unswappable <= node.site:
            return Blocker(Why.TOP_LEVEL)
        imported = sorted(name for name in changes.reimport if f"import:{name}" in ran)
        if imported:
            return Blocker(Why.MODULE_TOP_LEVEL, (imported[0],))
        stale = sorted((ran - {inside}) & changes.changed)
        running = [f for f in stale if f in node.outer]
        if running:
            return Blocker(Why.OUTER_CHANGED, (running[0],))
        if stale:
            return Blocker(Why.RAN_OLD_CODE, tuple(stale))
        return None

    def _same_way_in(self, node: Checkpoint) -> bool:
        """Whether the path to ``node``'s line is unchanged; decided once per (version, line):
        a site in a loop leaves many checkpoints at the same line."""
        assert node.version is not None and node.line is not None and node.entry is not None
        key = (node.version, node.entry, node.line)
        if key not in self._verdicts:
            self._verdicts[key] = self._compare_way_in(node.version, node.entry, node.line)
        return self._verdicts[key]

    def _compare_way_in(self, version: int, entry: str, line: int) -> bool:
        path, old = self.script.source_of(entry, version)
        if not old:
            return False
        try:
            site = sitelines.locate(ast.parse(old), line)
        except sitelines.NotASite:
            return False
        if path not in self._new_functions:
            new_source = self.new if path == self.script.path else self.modules.get(path, old)
            self._new_functions[path] = functions(ast.parse(new_source))
        new = self._new_functions[path].get(entry.rpartition(":")[2])
        if site is None or new is None:
            return False
        return sitelines.prefix_key(site.function, site.path) == sitelines.prefix_key(new, site.path)
