"""Which checkpoints of a script can go on with an edited version of it, and why not.

A checkpoint can continue the new code when everything that had run by then is the same in
the new code, or is code of functions that a swap of ``__code__`` hands the new body (and
that had not been called yet, since their results would be the old code's). At a call's
entry the function itself may have changed: it is called again. Before a line inside a call
the path to that line must be unchanged (``lines.prefix_key``), and the function may not also
be running further out (recursion), since those outer calls would go on with the old code.
"""

from __future__ import annotations

import ast

from forkpoint.instrument import lines as sitelines
from forkpoint.instrument.diff import SourceDiff, diff_sources, functions
from forkpoint.tree import Checkpoint

__all__ = ["ResumeCheck"]


class ResumeCheck:
    """Compares one new source with every version that ran (each diffed and parsed once)."""

    def __init__(self, versions: list[str], new: str) -> None:
        self.versions = versions
        self.new = new
        self._diffs: dict[int, SourceDiff] = {}
        self._trees: dict[int, ast.Module] = {}
        self._new_functions = functions(ast.parse(new))

    def diff(self, version: int) -> SourceDiff:
        if version not in self._diffs:
            self._diffs[version] = diff_sources(self.versions[version], self.new)
        return self._diffs[version]

    def why_not(self, node: Checkpoint, ran: set[str]) -> str | None:
        """None when ``node`` can go on with the new code; else the reason, in words.
        ``ran``: functions first called at or before ``node``."""
        assert node.version is not None and node.site is not None
        diff = self.diff(node.version)
        changed = diff.changed_functions | diff.removed_functions
        inside = node.entry
        if inside is not None:
            if inside in diff.removed_functions:
                return f"{inside}() is not in the new code"
            if inside in changed and inside in node.outer:
                return f"{inside}() is also running further out, where its old code would go on"
            if node.line is not None and not self._same_way_in(node):
                return f"the edit is above line {node.line} in {inside}()"
        if diff.first_unswappable is not None and diff.first_unswappable <= node.site:
            return "the edit changes top-level code that had run by then"
        stale = sorted((ran - {inside}) & changed)
        running = [f for f in stale if f in node.outer]
        if running:
            return f"{running[0]}() is running further out and changed, so it would go on with its old code"
        if stale:
            return f"{', '.join(f + '()' for f in stale)} had already run the old code"
        return None

    def _same_way_in(self, node: Checkpoint) -> bool:
        assert node.version is not None and node.line is not None and node.entry is not None
        if node.version not in self._trees:
            self._trees[node.version] = ast.parse(self.versions[node.version])
        try:
            site = sitelines.locate(self._trees[node.version], node.line)
        except sitelines.NotASite:
            return False
        new = self._new_functions.get(node.entry)
        if site is None or new is None:
            return False
        return sitelines.prefix_key(site.function, site.path) == sitelines.prefix_key(new, site.path)
