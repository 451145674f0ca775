"""``--checkpoint-at`` specs: parsing them and finding what they name in the user's sources.

A spec is ``FUNC`` (a function's entry: ``name``, ``Class.method``, ``module:func``) or
``FILE:LINE`` (before the statement that starts on that line; FILE relative to the working
directory, absolute, or any unambiguous path suffix). A spec that names nothing is a
``ForkpointError`` naming the close matches.
"""

from __future__ import annotations

import ast
import difflib
import os
from dataclasses import dataclass

from forkpoint.errors import ForkpointError
from forkpoint.instrument.diff import functions
from forkpoint.instrument.lines import NotASite, is_generator, locate

__all__ = ["Plan", "Site", "module_name", "plan", "resolve", "user_sources"]


@dataclass(frozen=True)
class Site:
    """A resolved place: a file, the line of the statement, and the function it opens (if any)."""

    path: str
    line: int
    function: str | None = None  # qualname when the site is a function's entry

    def describe(self) -> str:
        where = f"{os.path.relpath(self.path)}:{self.line}"
        return f"{self.function}() at {where}" if self.function else where


def resolve(spec: str, sources: dict[str, str], cwd: str | None = None) -> list[Site]:
    """The sites ``spec`` names among ``sources`` (absolute path -> text)."""
    spec = spec.strip()
    path_part, sep, line_part = spec.rpartition(":")
    if sep and line_part.isdigit():
        return [_line_site(path_part, int(line_part), sources, cwd or os.getcwd())]
    return _function_sites(spec, sources)


def _line_site(file: str, line: int, sources: dict[str, str], cwd: str) -> Site:
    path = _find_file(file, sources, cwd)
    tree = ast.parse(sources[path], path)
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno == line:
            return Site(path, line)
    starts = sorted({n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt)})
    after = [n for n in starts if n > line]
    hint = f"the next statement starts on line {after[0]}" if after else "it is past the last statement"
    raise ForkpointError(f"no statement starts on line {line} of {os.path.relpath(path, cwd)}.", hint)


def _find_file(file: str, sources: dict[str, str], cwd: str) -> str:
    candidate = os.path.normpath(os.path.join(cwd, file))
    if candidate in sources:
        return candidate
    suffix = os.sep + os.path.normpath(file).lstrip(os.sep)
    matches = sorted(p for p in sources if p.endswith(suffix) or p == file)
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(os.path.relpath(m, cwd) for m in matches)
        raise ForkpointError(f"{file} names more than one file: {shown}.", "give more of the path")
    close = difflib.get_close_matches(file, [os.path.relpath(p, cwd) for p in sources], n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else "it is not the script nor a watched module"
    raise ForkpointError(f"{file} is not one of the files forkpoint runs.", hint)


def _function_sites(spec: str, sources: dict[str, str]) -> list[Site]:
    module, sep, name = spec.rpartition(":")
    if not sep:
        module, name = "", spec
    found: list[Site] = []
    every: list[str] = []
    for path, text in sorted(sources.items()):
        if module and module not in (module_name(path), _module_name(path)):
            continue
        for qualname, node in functions(ast.parse(text, path)).items():
            every.append(qualname)
            if qualname == name or (not module and "." not in name and qualname.split(".")[-1] == name):
                line = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                found.append(Site(path, line, qualname))
    if not found:
        close = difflib.get_close_matches(name, sorted(set(every)), n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else "no function of that name is defined"
        raise ForkpointError(f"--checkpoint-at {spec} names no function.", hint)
    return found


def _module_name(path: str) -> str:
    """The last part of the module name, as ``module:func`` specs give it."""
    return module_name(path).rpartition(".")[2]


def module_name(path: str) -> str:
    """The name a file is imported by: its stem, after the packages above it."""
    folder, base = os.path.split(path)
    parts = [os.path.splitext(base)[0]]
    if base == "__init__.py":
        folder, package = os.path.split(folder)
        parts = [package]
    while os.path.exists(os.path.join(folder, "__init__.py")):
        folder, package = os.path.split(folder)
        parts.insert(0, package)
    return ".".join(parts)


_SKIP = {"__pycache__", "node_modules", "site-packages", "build", "dist"}
MAX_FILES = 2000


def user_sources(script: str, watch: list[str]) -> dict[str, str]:
    """The user's modules that ``--checkpoint-at`` may name: .py files under the script's folder
    and the watched ones (no hidden folders, virtual environments or caches), by path."""
    found: dict[str, str] = {}
    for root in [os.path.dirname(script), *watch]:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [
                d
                for d in dirs
                if not d.startswith(".")
                and d not in _SKIP
                and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
            ]
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and path not in found and len(found) < MAX_FILES:
                    try:
                        with open(path, encoding="utf-8") as f:
                            text = f.read()
                        ast.parse(text, path)
                    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                        continue
                    found[path] = text
    return found


@dataclass
class Plan:
    """Where ``--checkpoint-at`` puts checkpoints: function keys (``module:qualname`` outside
    the script), lines by file, and notes for the user about lines whose checkpoint moved."""

    entries: list[str]
    lines: dict[str, list[int]]
    notes: list[str]


def plan(specs: list[str], script: str, sources: dict[str, str]) -> Plan:
    """Resolve ``specs`` among ``sources`` (the script and the user's modules, by path)."""
    result = Plan([], {}, [])
    for spec in specs:
        for site in resolve(spec, sources):
            prefix = "" if site.path == script else module_name(site.path) + ":"
            tree = ast.parse(sources[site.path], site.path)
            if site.function is None:
                _plan_line(spec, site, tree, prefix, result)
                continue
            if is_generator(functions(tree)[site.function]):
                _plan_callers(spec, site.function, site.function, tree, prefix, result)
                continue
            result.entries.append(prefix + site.function)
    return result


def _plan_callers(spec: str, what: str, function: str, tree: ast.Module, prefix: str, result: Plan) -> None:
    """A checkpoint asked for in a generator (or coroutine), whose calls cannot be entered
    again: put it at the entry of the nearest callers in this file that are plain functions."""
    callers = nearest_plain_callers(tree, function)
    if not callers:
        raise ForkpointError(
            f"--checkpoint-at {spec}: {what} is a generator or coroutine, "
            "whose calls cannot be entered again.",
            "no plain function of its file calls it: name the function that iterates it",
        )
    names = ", ".join(f"{c}()" for c in callers)
    result.notes.append(
        f"{what} is a generator or coroutine, whose calls cannot be entered again, so the checkpoint "
        f"is at the entry of {names} instead, which call{'s' if len(callers) == 1 else ''} it"
    )
    result.entries.extend(prefix + c for c in callers)


def nearest_plain_callers(tree: ast.Module, function: str) -> list[str]:
    """The functions of ``tree`` that call ``function`` by name and are not generators or
    coroutines, going up through callers that are (a pipeline of generators); outermost
    functions and methods only, which are the ones that get entry sites."""
    found = functions(tree)
    todo, seen = [function], {function}
    plain: list[str] = []
    while todo:
        callee = todo.pop(0).rpartition(".")[2]
        for qualname, node in found.items():
            if qualname in seen or "<locals>" in qualname or not _calls(node, callee):
                continue
            seen.add(qualname)
            (todo if is_generator(node) else plain).append(qualname)
    return plain


def _calls(node: ast.AST, name: str) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            if (isinstance(func, ast.Name) and func.id == name) or (
                isinstance(func, ast.Attribute) and func.attr == name
            ):
                return True
    return False


def _plan_line(spec: str, site: Site, tree: ast.Module, prefix: str, result: Plan) -> None:
    line = site.line
    try:
        found = locate(tree, line)
    except NotASite as exc:
        if is_generator(functions(tree)[exc.fallback]):
            _plan_callers(spec, f"line {line}'s function {exc.fallback}", exc.fallback, tree, prefix, result)
            return
        result.notes.append(f"{exc.why}, so the checkpoint is at the entry of {exc.fallback}() instead")
        result.entries.append(prefix + exc.fallback)
        return
    method = _method_defined_on(tree, line)
    if found is not None:
        result.lines.setdefault(site.path, []).append(line)
    elif method is not None:
        result.notes.append(f"line {line} defines {method}, so the checkpoint is at the entry of each call")
        result.entries.append(prefix + method)
    elif not any(stmt.lineno == line for stmt in tree.body):
        raise ForkpointError(
            f"--checkpoint-at {spec}: line {line} is in a class body, which runs once.",
            "the checkpoint after the class statement is the nearest",
        )
    # a top-level statement of the script: the checkpoint after the one before is already
    # there; of a module: it runs once, at import


def _method_defined_on(tree: ast.Module, line: int) -> str | None:
    """The method whose ``def`` (or first decorator) is on ``line`` of a class body."""
    for qualname, node in functions(tree).items():
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        if start == line and "." in qualname and "<locals>" not in qualname.rsplit(".", 1)[0]:
            return qualname
    return None
