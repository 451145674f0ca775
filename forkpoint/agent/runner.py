"""``forkpoint run`` inside the head: run a script with sites, continue it with new code.

The script runs as ``python script.py`` would (``__main__``, ``__file__``, ``sys.argv``,
``sys.path[0]``), compiled by forkpoint with a site after each top-level statement; the user's
own modules (under the script's folder or a watched path) are compiled with their function
sites on import. A site takes a checkpoint; in a head rewound to it with a resume directive,
the site swaps the code of changed functions, runs the rest of the *new* script from the next
statement in the same globals, and ends the old script's frame with ``Finished``.

Functions are known by key: their qualname in the script, ``module:qualname`` in a module.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import linecache
import os
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from forkpoint.agent import imports, midcall, pacing, pytest_env, snapshot
from forkpoint.agent.functions import call_arguments, code_objects, find_function
from forkpoint.instrument import lines as sitelines
from forkpoint.instrument.diff import diff_sources
from forkpoint.instrument.rewrite import (
    CALLED_NAME,
    CONTINUE_NAME,
    ENTRY_NAME,
    SITE_NAME,
    Sites,
    compile_module,
    compile_script,
    unmarked,
)
from forkpoint.protocol import INLINE_PATH

__all__ = ["Finished", "RemainderFailed", "Sites", "called", "count", "entry", "line", "prepare", "site"]


class Finished(BaseException):
    """The new code ran to the end: the old script's frames must stop, successfully."""


class RemainderFailed(BaseException):
    """The new code raised: carries that exception, with a traceback of the new code only."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


Compiler = Callable[..., types.CodeType]  # called as (source, path, sites=...)


@dataclass
class _File:
    """The script or one of the user's modules, as the live code was compiled from it."""

    path: str
    module: str  # "__main__" for the script
    source: str
    sites: Sites
    compiler: Compiler | None = None  # how a new version compiles, when not as forkpoint does

    @property
    def namespace(self) -> dict[str, Any]:
        module = sys.modules.get(self.module)
        return module.__dict__ if module is not None else {}


_files: dict[str, _File] = {}  # path -> file
_script = ""  # the script's path
_entries: frozenset[str] = frozenset()  # keys of functions with a checkpoint at each call's entry
_lines: dict[str, frozenset[int]] = {}  # path -> lines with a checkpoint before them
_first_calls: list[str] = []  # functions first called (and modules imported) since the last site
_marked: dict[int, types.CodeType] = {}  # id -> marked code whose first call has run
_unswapped: dict[int, tuple[str, types.CodeType]] = {}  # id -> (key, code): first call running
_calls: dict[str, int] = {}  # calls so far of each function with a site inside
_statement = 0  # the top-level statement running now
_pending: tuple[str, str] | None = None  # new source whose later statements must run next
CONTINUE = object()  # what an entry site returns when the call should simply go on
# Set by the head: serve requests in a head paused at a site, with ``frame`` innermost.
on_pause: Callable[[types.FrameType], NoReturn] | None = None


def prepare(
    path: str,
    source: str,
    argv: list[str],
    entries: frozenset[str] = frozenset(),
    lines: dict[str, frozenset[int]] | None = None,
    watch: tuple[str, ...] = (),
    argv0: str | None = None,
    run_module: str | None = None,
    stop_in_tests: bool = False,
) -> tuple[types.CodeType, dict[str, Any]]:
    """Set the process up like ``python path argv...`` and compile the script with sites; the
    user's modules under its folder and ``watch`` get theirs when imported."""
    global _script, _entries, _lines, _statement
    _script, _entries, _lines, _statement = path, entries, dict(lines or {}), 0
    module = types.ModuleType("__main__")
    ns = module.__dict__
    # As python sets them: for a script its loader (linecache, inspect and pkgutil ask it),
    # the builtins module itself, no spec, no cached file; for -m the module's spec and
    # package, with the current folder first on sys.path; for -c no file and ''.
    ns.update(__builtins__=builtins, __spec__=None)
    if path == INLINE_PATH:
        ns.update(__loader__=importlib.machinery.BuiltinImporter)
        sys.path[0] = ""
        roots = [os.getcwd()]
    elif run_module is not None:
        spec = importlib.util.spec_from_file_location(run_module, path)
        assert spec is not None
        ns.update(__file__=path, __cached__=None, __loader__=spec.loader, __spec__=spec)
        ns.update(__package__=spec.parent)
        sys.path[0] = os.getcwd()
        roots = [sys.path[0]]
    else:
        loader = importlib.machinery.SourceFileLoader("__main__", path)
        ns.update(__file__=path, __cached__=None, __loader__=loader)
        sys.path[0] = os.path.dirname(os.path.abspath(path))
        roots = [sys.path[0]]
    install_site_functions()
    sys.modules["__main__"] = module
    sys.argv = [argv0 or path, *argv]
    imports.install([*roots, *watch], _compile_module)
    if stop_in_tests and (run_module == "pytest.__main__" or os.path.basename(path) in ("pytest", "py.test")):
        pytest_env.load_plugin()
    _remember(path, "__main__", source)
    return compile_script(source, path, sites=_files[path].sites), ns


def install_site_functions() -> None:
    """What the rewritten code calls, as builtins: names no user code can spell, found by the
    same lookup as ``len``, so the user's module globals (``globals()``, ``dir()``) hold only
    what python would put there."""
    names = vars(builtins)
    names[SITE_NAME] = site
    names[CALLED_NAME] = called
    names[ENTRY_NAME] = entry
    names[CONTINUE_NAME] = CONTINUE
    names[sitelines.LINE_NAME] = line
    names[sitelines.COUNT_NAME] = count
    names[sitelines.GUARD_NAME] = midcall.Guard
    names[sitelines.RESUMED_NAME] = midcall.resumed
    names[sitelines.PASSING_NAME] = midcall.passing


def _compile_module(module: str, path: str, source: str) -> types.CodeType:
    """A user's module being imported: compiled with sites; the controller learns its source."""
    known_module(path, module, source)
    return compile_module(source, path, sites=_files[path].sites)


def known_module(path: str, module: str, source: str, compiler: Compiler | None = None) -> None:
    """A module of the user's, imported: its functions can be diffed and swapped, and the
    controller learns its exact source. One that another importer compiled (pytest's, for a
    test module) comes with its ``compiler``, and its functions have no first-call markers."""
    _remember(path, module, source, compiler)
    _first_calls.append(f"import:{module}")
    snapshot.channel().send({"op": "module", "name": module, "path": path, "source": source})


def checkpoint_before(key: str) -> None:
    """A checkpoint before a call of ``key`` is set up (a test, before its fixtures). In a head
    resumed here the changed functions get their new code and the caller goes on: the call
    has not begun, so all of it runs the new code. Light, as a site between definitions is:
    taken once the calls since the last checkpoint took ``pacing.LIGHT`` times its pause, so
    a thousand quick tests do not pay a thousand forks (a resume runs a few again instead)."""
    _calls[key] = _calls.get(key, 0) + 1
    if pacing.soon(pacing.LIGHT):
        return
    directive = _take_in(key, sys._getframe(1), None, spaced=False)
    if directive is not None:
        _resume_in_call(directive, key)


def _sites_of(path: str, module: str) -> Sites:
    prefix = "" if module == "__main__" else module + ":"
    entries = frozenset(e for e in _entries if (":" in e) == bool(prefix) and e.startswith(prefix))
    return Sites(entries, _lines.get(path, frozenset()), prefix)


def _remember(path: str, module: str, source: str, compiler: Compiler | None = None) -> None:
    _files[path] = _File(path, module, source, _sites_of(path, module), compiler)
    if path == INLINE_PATH and sys.version_info < (3, 13):
        return  # python shows a -c program's lines in tracebacks from 3.13 on only
    # Tracebacks show the lines that ran, not whatever the file holds after an edit.
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)


def _split(key: str) -> tuple[_File, str]:
    """The file a function key belongs to, and its qualname there."""
    module, sep, qualname = key.rpartition(":")
    if not sep:
        return _files[_script], key
    return next(f for f in _files.values() if f.module == module), qualname


def called(key: str) -> None:
    """What a marked function runs first. At its first call the call is noted for the next
    site; from then on it runs unmarked: its live code with the marker jumped over
    (``unmarked``), whichever version it is.

    The swap waits until the first call is over (the next marked call of any function), so
    that during it ``f.__code__`` is its frame's code, as under python (CPython's own
    test_sys checks). A function whose object cannot be found (a wrapper hides it) keeps its
    marker, which then costs a dict lookup."""
    code = sys._getframe(1).f_code
    here = id(code)
    for other in [c for c in _unswapped if c != here]:
        _swap_out_marker(*_unswapped.pop(other))
    if here not in _marked:  # the first call
        _first_calls.append(key)
        _marked[here] = code  # kept alive, so its id is never another code's
        _unswapped[here] = (key, code)
    elif here in _unswapped:  # called again before any other marked function: swap now
        _swap_out_marker(*_unswapped.pop(here))


def _swap_out_marker(key: str, code: types.CodeType) -> None:
    file, qualname = _split(key)
    func = find_function(qualname, file.namespace, code)
    if func is not None and (clean := unmarked(code)) is not None:
        func.__code__ = clean


def site(index: int, light: bool = False) -> None:
    """What the inserted statement after top-level statement ``index`` calls. Between two
    definitions (``light``: defs, classes, imports), when the one before took less than
    ``pacing.LIGHT`` times the last checkpoint's pause, no checkpoint is taken: a module of
    hundreds of defs would otherwise pay a fork for each, and a resume from the checkpoint
    before them runs them again in microseconds (with the new code, as a fresh run would)."""
    global _statement, _pending
    _statement = index + 1
    if _pending is not None:  # a resumed call has returned: the rest of the script is new code
        (path, source), _pending = _pending, None
        _run_rest(path, source, index + 1)
    if light and pacing.soon(pacing.LIGHT, restart=True):
        return  # the calls first made here travel with the next checkpoint
    start = time.perf_counter()
    taken = snapshot.take(site=index, called=_drain_calls(), skipped=pacing.skipped)
    pacing.taken(start, paused=taken is not None)
    if taken is None:
        directive = _unless_paused(snapshot.pop_directive(), sys._getframe(1))
        if directive is not None:
            _apply(directive)
            _run_rest(str(directive["path"]), str(directive["source"]), int(directive["start"]))


def is_passing(frame: types.FrameType) -> bool:
    """Whether ``frame`` is an old frame whose call went on in new code."""
    return midcall.is_passing(frame)


def count(qualname: str) -> None:
    """First thing in a function with a line site: number its calls."""
    _calls[qualname] = _calls.get(qualname, 0) + 1


def _take_in(
    qualname: str, frame: types.FrameType, line: int | None, spaced: bool = True
) -> dict[str, Any] | None:
    """A checkpoint in a call of ``qualname``; the resume directive in a head resumed there.
    A hit of a site already hit soon after the last checkpoint takes none (``pacing``): a site
    in a loop would otherwise fork at every iteration, whatever the work between (3 ms at
    1 GiB). A resume goes on from the nearest checkpoint taken; the calls since run again."""
    if spaced and not pacing.hit_due((qualname, line)):
        return None
    start = time.perf_counter()
    outer = []
    caller = frame.f_back
    while caller is not None and caller.f_code.co_name != "<module>":
        if caller.f_code.co_filename == frame.f_code.co_filename and not midcall.is_passing(caller):
            outer.append(caller.f_code.co_qualname)
        caller = caller.f_back
    taken = snapshot.take(
        site=_statement,
        called=_drain_calls(),
        entry=qualname,
        line=line,
        call=_calls[qualname],
        outer=outer,
        skipped=pacing.skipped,
    )
    pacing.taken(start, paused=taken is not None)
    return _unless_paused(snapshot.pop_directive(), frame) if taken is None else None


def _unless_paused(directive: dict[str, Any] | None, frame: types.FrameType) -> dict[str, Any] | None:
    """A head rewound to a site without resuming stays there, serving inputs in ``frame``."""
    if directive is not None and directive.get("pause"):
        assert on_pause is not None
        on_pause(frame)
    return directive


def _resume_in_call(directive: dict[str, Any], key: str) -> tuple[_File, str, str]:
    """Take the new code in a head resumed inside a call of ``key``; returns its file (as it
    is now), its qualname and the source the old frame runs."""
    global _pending
    old = _split(key)[0].source
    _apply(directive)
    _pending = (str(directive["path"]), str(directive["source"]))
    file, qualname = _split(key)
    return file, qualname, old


def line(key: str, lineno: int, cells: Any) -> Any:
    """The checkpoint before line ``lineno`` inside a call. In a head resumed there, run the rest
    of the call with the function's new code and hand its value back to the old frame."""
    frame = sys._getframe(1)
    directive = _take_in(key, frame, lineno)
    if directive is None:
        return CONTINUE  # a plain rewind, or no rewind at all: the old code goes on
    file, qualname, old = _resume_in_call(directive, key)
    if qualname not in diff_sources(old, file.source).changed_functions:
        return CONTINUE  # the call's own code is the same: it goes on as it is
    return midcall.build(old, file.source, file.path, qualname, lineno, frame, cells, file.sites)()


def entry(key: str, arguments: dict[str, Any]) -> Any:
    """The checkpoint at a call's entry. In a head resumed there, call the function again with
    the same arguments (its code is new by then) and hand its value to the old frame."""
    _calls[key] = _calls.get(key, 0) + 1
    directive = _take_in(key, sys._getframe(1), None)
    if directive is None:
        return CONTINUE
    file, qualname, _ = _resume_in_call(directive, key)
    func = find_function(qualname, file.namespace)
    if func is None:
        raise RuntimeError(f"forkpoint: {key} is not in the new code")
    args, kwargs = call_arguments(func.__code__, arguments)
    return func(*args, **kwargs)


def _drain_calls() -> list[str]:
    calls = _first_calls[:]
    _first_calls.clear()
    return calls


def _apply(directive: dict[str, Any]) -> None:
    """New code for changed functions of the script and of loaded modules; remember the sources
    they came from and their sites."""
    global _lines
    _lines = {str(p): frozenset(int(n) for n in ns) for p, ns in directive.get("lines", {}).items()}
    changes = {str(directive["path"]): str(directive["source"])}
    changes.update({str(p): str(src) for p, src in directive.get("modules", {}).items()})
    swapped = []
    for path, source in changes.items():
        file = _files.get(path)
        if file is None:
            continue  # a module not imported yet: its import will read the new file
        _remember(path, file.module, source, file.compiler)
        swapped += swap_functions(file.source, _files[path])
    if swapped:
        snapshot.notify("swapped", sorted(swapped))


def _run_rest(path: str, source: str, start: int) -> None:
    """Run the new script's statements from ``start`` in the same globals; end the old frame."""
    ns = sys.modules["__main__"].__dict__
    code = compile_script(source, path, start, sites=_files[path].sites)
    try:
        exec(code, ns)
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        raise RemainderFailed(exc.with_traceback(tb)) from None
    raise Finished


def swap_functions(old: str, new: _File) -> list[str]:
    """Give live functions of ``new``'s module whose body changed the new code; their keys."""
    changed = diff_sources(old, new.source).changed_functions
    compiled = new.compiler or (compile_script if new.module == "__main__" else compile_module)
    codes = code_objects(compiled(new.source, new.path, sites=new.sites))  # marked: first calls noted
    swapped = []
    for qualname in changed:
        func = find_function(qualname, new.namespace)
        code = codes.get(qualname)
        if func is None or code is None:
            continue
        if func.__code__.co_freevars == code.co_freevars:
            func.__code__ = code
            swapped.append(new.sites.prefix + qualname)
    return swapped
