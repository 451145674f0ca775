"""Which checkpoints of a script can go on with an edited version of it, and why not.

A checkpoint can continue the new code when everything that had run by then is the same in
the new code, or is code of functions that a swap of ``__code__`` hands the new body (and
that had not been called yet, since their results would be the old code's). At a call's
entry the function itself may have changed: it is called again. Before a line inside a call
the path to that line must be unchanged (``lines.prefix_key``), and the function may not also
be running further out (recursion), since those outer calls would go on with the old code.
A module whose top level changed must not have been imported by then.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from forkpoint.controller.script import Script
from forkpoint.instrument import lines as sitelines
from forkpoint.instrument.diff import diff_sources, functions
from forkpoint.tree import Checkpoint

__all__ = ["ResumeCheck"]


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

    def why_not(self, node: Checkpoint, ran: set[str]) -> str | None:
        """None when ``node`` can go on with the new code; else the reason, in words.
        ``ran``: functions first called (and modules imported) at or before ``node``."""
        assert node.version is not None and node.site is not None
        changes = self.changes(node.version)
        inside = node.entry
        if inside is not None:
            if inside in changes.removed:
                return f"{inside}() is not in the new code"
            if inside in changes.changed and inside in node.outer:
                return f"{inside}() is also running further out, where its old code would go on"
            if node.line is not None and not self._same_way_in(node):
                return f"the edit is above line {node.line} in {inside}()"
        if changes.first_unswappable is not None and changes.first_unswappable <= node.site:
            return "the edit changes top-level code that had run by then"
        imported = sorted(name for name in changes.reimport if f"import:{name}" in ran)
        if imported:
            return f"module {imported[0]} changed outside its functions, and it had been imported by then"
        stale = sorted((ran - {inside}) & changes.changed)
        running = [f for f in stale if f in node.outer]
        if running:
            return f"{running[0]}() is running further out and changed, so it would go on with its old code"
        if stale:
            return f"{', '.join(f + '()' for f in stale)} had already run the old code"
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
