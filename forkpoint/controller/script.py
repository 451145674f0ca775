"""The script of ``forkpoint run`` and its user modules: every version of their sources that
ran, and where the line checkpoints are in the latest one.

A version is one run-or-resume: version 0 is what the script started with, each resume adds
one. Modules join a version when the head imports them (it sends the exact source it compiled).
Functions are known by key: their qualname in the script, ``module:qualname`` in a module.
"""

from __future__ import annotations

import ast
import io
import os
import tokenize
from dataclasses import dataclass, field
from typing import Any

from forkpoint.errors import ForkpointError
from forkpoint.instrument.lines import follow_line

__all__ = ["Script", "read_script"]


@dataclass
class Script:
    path: str
    argv: list[str]
    versions: list[str]  # the script's source, per version
    started: float
    entries: list[str] = field(default_factory=list)  # keys of functions with a checkpoint at each call
    lines: dict[str, list[int]] = field(default_factory=dict)  # path -> checkpoints before these lines
    watch: list[str] = field(default_factory=list)  # folders whose modules get sites, besides the script's
    modules: dict[str, str] = field(default_factory=dict)  # path -> module name, once imported
    module_versions: list[dict[str, str]] = field(default_factory=lambda: [{}])  # per version: path -> source
    argv0: str = ""  # the script's path as the user typed it (python's sys.argv[0]); "": ``path``
    module: str = ""  # run as python -m this module
    _titles: dict[int, list[str]] = field(default_factory=dict, repr=False)
    _source_lines: dict[tuple[int, str], list[str]] = field(default_factory=dict, repr=False)

    def to_meta(self) -> dict[str, Any]:
        """What a saved session keeps of the script (plain JSON: sources, not objects)."""
        return {
            "path": self.path,
            "argv": self.argv,
            "versions": self.versions,
            "started": self.started,
            "entries": self.entries,
            "lines": self.lines,
            "watch": self.watch,
            "modules": self.modules,
            "module_versions": self.module_versions,
            "argv0": self.argv0,
            "module": self.module,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Script:
        script = cls(
            str(meta["path"]), [str(a) for a in meta["argv"]], [str(v) for v in meta["versions"]], 0.0
        )
        script.started = float(meta["started"])
        script.entries = [str(e) for e in meta["entries"]]
        script.lines = {str(p): [int(n) for n in ns] for p, ns in dict(meta["lines"]).items()}
        script.watch = [str(w) for w in meta["watch"]]
        script.modules = {str(p): str(n) for p, n in dict(meta["modules"]).items()}
        script.module_versions = [
            {str(p): str(t) for p, t in dict(v).items()} for v in meta["module_versions"]
        ]
        script.argv0 = str(meta.get("argv0") or "")
        script.module = str(meta.get("module") or "")
        return script

    def describe(self, site: int) -> str:
        """'line 12: boxes = detect(frames)' for top-level statement ``site`` of the running
        version (parsed once per version: a site in a loop asks for every checkpoint)."""
        version = len(self.versions) - 1
        if version not in self._titles:
            source = self.versions[version]
            lines = source_lines(source)
            self._titles[version] = [_title(lines, at) for at in statement_starts(source)]
        return self._titles[version][site]

    def describe_call(self, key: str, call: int | None, line: int | None) -> str:
        """'the entry of call 7 of process()' or 'before line 14 in call 7 of process(): ...'."""
        which = f"call {call} of {key}()"
        if line is None:
            return f"the entry of {which}"
        version = len(self.versions) - 1
        path, source = self.source_of(key, version)
        if (version, path) not in self._source_lines:  # a site in a loop asks at every checkpoint
            self._source_lines[(version, path)] = source_lines(source)
        lines = self._source_lines[(version, path)]
        text = lines[line - 1].strip() if line <= len(lines) else ""
        where = f"line {line}" if path == self.path else f"line {line} of {os.path.basename(path)}"
        return f"before {where} in {which}: {text if len(text) <= 50 else text[:47] + '...'}"

    def source_of(self, key: str, version: int) -> tuple[str, str]:
        """The file a function key is in, and its source in ``version`` ("" if not imported)."""
        module, sep, _ = key.rpartition(":")
        if not sep:
            return self.path, self.versions[version]
        path = next((p for p, name in self.modules.items() if name == module), "")
        return path, self.module_versions[version].get(path, "")

    def imported(self, name: str, path: str, source: str) -> None:
        self.modules[path] = name
        self.module_versions[-1][path] = source
        self._source_lines.pop((len(self.versions) - 1, path), None)

    def new_version(self, source: str, modules: dict[str, str]) -> None:
        self.versions.append(source)
        self.module_versions.append(dict(modules))

    def edited_modules(self) -> dict[str, str]:
        """The modules whose file differs from the source that runs: path -> new source."""
        changed = {}
        for path, running in self.module_versions[-1].items():
            now = read_script(path, what="module")
            if now != running:
                changed[path] = now
        return changed

    def follow_lines(self, new: str, modules: dict[str, str]) -> list[tuple[str, int]]:
        """Move the line checkpoints to where their statements are in the new sources; returns
        those that are gone with their statements, as (path, line)."""
        gone = []
        for path, lines in list(self.lines.items()):
            old = self.versions[-1] if path == self.path else self.module_versions[-1].get(path)
            now = new if path == self.path else modules.get(path, old)
            if old is None or now is None or old == now:
                continue
            old_tree, new_tree = ast.parse(old), ast.parse(now)
            moved = [(line, follow_line(old_tree, new_tree, line)) for line in lines]
            gone += [(path, line) for line, n in moved if n is None]
            self.lines[path] = [n for _, n in moved if n is not None]
        return gone


def source_lines(source: str) -> list[str]:
    """The lines as the compiler numbers them (\\n, \\r\\n or \\r end one; str.splitlines
    would also split at form feeds and other separators, and miscount)."""
    return [line.rstrip("\r\n") for line in io.StringIO(source, newline=None).readlines()]


def _title(lines: list[str], at: tuple[int, int]) -> str:
    """A top-level statement's first line. (Not ``ast.get_source_segment``: it splits the
    whole source at every call, which made the titles of a 3,000-line module take a second.)"""
    lineno, col = at
    text = lines[lineno - 1][col:].rstrip() if lineno <= len(lines) else ""
    return f"line {lineno}: {text if len(text) <= 60 else text[:57] + '...'}"


# Where the top-level statements of recently read sources start: a parse of a 9,000-line
# module takes a fifth of a second here, and reading a script parses it already.
_STARTS: dict[str, tuple[tuple[int, int], ...]] = {}
_STARTS_KEPT = 8


def statement_starts(source: str, tree: ast.Module | None = None) -> tuple[tuple[int, int], ...]:
    """(line, column) of each top-level statement of ``source``."""
    found = _STARTS.get(source)
    if found is None:
        tree = tree or ast.parse(source)
        found = tuple((stmt.lineno, stmt.col_offset) for stmt in tree.body)
        if len(_STARTS) >= _STARTS_KEPT:
            _STARTS.pop(next(iter(_STARTS)))
        _STARTS[source] = found
    return found


def read_script(path: str, what: str = "script", check: bool = True) -> str:
    """A source file, decoded as python decodes it (its coding declaration, else UTF-8), or
    one clear sentence on why it cannot run (with ``check``, a syntax error too)."""
    try:
        with tokenize.open(path) as f:
            source = f.read()
    except FileNotFoundError:
        raise ForkpointError(f"{path} does not exist.", f"was the {what} moved or deleted?") from None
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:  # SyntaxError: a bad coding line
        raise ForkpointError(f"cannot read {path}: {exc}.") from None
    if check:
        check_syntax(path, source)
    return source


def check_syntax(path: str, source: str) -> None:
    """One clear sentence for a syntax error (the parse is kept for the titles)."""
    try:
        statement_starts(source, ast.parse(source, path))
    except SyntaxError as exc:
        raise ForkpointError(
            f"{os.path.relpath(path)}, line {exc.lineno}: {exc.msg}.",
            "fix it and try again; nothing was lost",
        ) from None
