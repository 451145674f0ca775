"""``forkpoint run`` inside the head: run a script with sites, continue it with new code.

The script runs as ``python script.py`` would (``__main__``, ``__file__``, ``sys.argv``,
``sys.path[0]``), compiled by forkpoint with a site after each top-level statement. A site takes
a checkpoint; in a head rewound to it with a resume directive, the site swaps the code of changed
functions, runs the rest of the *new* script from the next statement in the same globals, and
ends the old script's frame with ``_Finished``.
"""

from __future__ import annotations

import inspect
import linecache
import os
import sys
import types
from typing import Any

from forkpoint.agent import snapshot
from forkpoint.instrument.diff import diff_sources
from forkpoint.instrument.rewrite import CALLED_NAME, CONTINUE_NAME, ENTRY_NAME, SITE_NAME, compile_script

__all__ = ["Finished", "RemainderFailed", "called", "prepare", "site"]


class Finished(BaseException):
    """The new code ran to the end: the old script's frames must stop, successfully."""


class RemainderFailed(BaseException):
    """The new code raised: carries that exception, with a traceback of the new code only."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


_running: dict[str, str] = {}  # path -> the exact source the live code was compiled from
# (qualname, first line) -> code without the first-call marker (a name may be defined twice)
_clean: dict[tuple[str, int], types.CodeType] = {}
_first_calls: list[str] = []  # functions first called since the last site
_entries: frozenset[str] = frozenset()  # functions with a checkpoint at each call's entry
_statement = 0  # the top-level statement running now
_pending: tuple[str, str] | None = None  # new source whose later statements must run next
CONTINUE = object()  # what an entry site returns when the call should simply go on


def prepare(
    path: str, source: str, argv: list[str], entries: frozenset[str] = frozenset()
) -> tuple[types.CodeType, dict[str, Any]]:
    """Set the process up like ``python path argv...`` and compile the script with sites."""
    global _entries, _statement
    _entries, _statement = entries, 0
    module = types.ModuleType("__main__")
    ns = module.__dict__
    ns.update(__file__=path, __builtins__=__builtins__, __cached__=None)
    ns[SITE_NAME] = site
    ns[CALLED_NAME] = called
    ns[ENTRY_NAME] = entry
    ns[CONTINUE_NAME] = CONTINUE
    sys.modules["__main__"] = module
    sys.argv = [path, *argv]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    _remember(path, source)
    return compile_script(source, path, entries=entries), ns


def _remember(path: str, source: str) -> None:
    _running[path] = source
    _clean.clear()
    for code in _all_code(compile_script(source, path, marked=False, entries=_entries)):
        _clean[(code.co_qualname, code.co_firstlineno)] = code
    # Tracebacks show the lines that ran, not whatever the file holds after an edit.
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)


def called(qualname: str) -> None:
    """First call of a function: note it for the next site, then run unmarked from now on."""
    _first_calls.append(qualname)
    func = _find_function(qualname, sys.modules["__main__"].__dict__)
    clean = _clean.get((qualname, func.__code__.co_firstlineno)) if func is not None else None
    if func is not None and clean is not None and func.__code__.co_freevars == clean.co_freevars:
        func.__code__ = clean


def site(index: int) -> None:
    """What the inserted statement after top-level statement ``index`` calls."""
    global _statement, _pending
    _statement = index + 1
    if _pending is not None:  # a resumed call has returned: the rest of the script is new code
        (path, source), _pending = _pending, None
        _run_rest(path, source, index + 1)
    if snapshot.take(site=index, called=_drain_calls()) is None:
        directive = snapshot.pop_directive()
        if directive is not None:
            _apply(str(directive["path"]), str(directive["source"]))
            _run_rest(str(directive["path"]), str(directive["source"]), int(directive["start"]))


def entry(qualname: str, arguments: dict[str, Any]) -> Any:
    """The checkpoint at a call's entry. In a head resumed there, call the function again with
    the same arguments (its code is new by then) and hand its value to the old frame."""
    global _pending
    if snapshot.take(site=_statement, called=_drain_calls(), entry=qualname) is not None:
        return CONTINUE
    directive = snapshot.pop_directive()
    if directive is None:
        return CONTINUE  # a plain rewind: the old code goes on from here
    path, source = str(directive["path"]), str(directive["source"])
    _apply(path, source)
    _pending = (path, source)
    func = _find_function(qualname, sys.modules["__main__"].__dict__)
    if func is None:
        raise RuntimeError(f"forkpoint: {qualname} is not in the new code")
    args, kwargs = _call_arguments(func.__code__, arguments)
    return func(*args, **kwargs)


def _call_arguments(code: types.CodeType, values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    names = code.co_varnames
    positional = [values[n] for n in names[: code.co_argcount]]
    kwonly = {n: values[n] for n in names[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]}
    rest = code.co_argcount + code.co_kwonlyargcount
    if code.co_flags & inspect.CO_VARARGS:
        positional.extend(values[names[rest]])
        rest += 1
    if code.co_flags & inspect.CO_VARKEYWORDS:
        kwonly.update(values[names[rest]])
    return positional, kwonly


def _drain_calls() -> list[str]:
    calls = _first_calls[:]
    _first_calls.clear()
    return calls


def _apply(path: str, source: str) -> None:
    """New code for changed functions; remember the source it came from."""
    ns = sys.modules["__main__"].__dict__
    swapped = swap_functions(_running.get(path, ""), source, path, ns)
    _remember(path, source)
    if swapped:
        snapshot.notify(f"new code for {', '.join(sorted(swapped))}")


def _run_rest(path: str, source: str, start: int) -> None:
    """Run the new script's statements from ``start`` in the same globals; end the old frame."""
    ns = sys.modules["__main__"].__dict__
    code = compile_script(source, path, start, entries=_entries)
    try:
        exec(code, ns)
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        raise RemainderFailed(exc.with_traceback(tb)) from None
    raise Finished


def swap_functions(old: str, new: str, path: str, ns: dict[str, Any]) -> list[str]:
    """Give live functions whose body changed the new code; returns their qualnames."""
    if not old:
        return []
    changed = diff_sources(old, new).changed_functions
    codes = _code_objects(compile_script(new, path, entries=_entries))  # marked: first calls noted
    swapped = []
    for qualname in changed:
        func = _find_function(qualname, ns)
        code = codes.get(qualname)
        if func is None or code is None:
            continue
        if func.__code__.co_freevars == code.co_freevars:
            func.__code__ = code
            swapped.append(qualname)
    return swapped


def _all_code(code: types.CodeType) -> list[types.CodeType]:
    found = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.append(const)
            found.extend(_all_code(const))
    return found


def _code_objects(code: types.CodeType) -> dict[str, types.CodeType]:
    """Code objects by qualname; for a name defined twice, the first (diff does the same)."""
    found: dict[str, types.CodeType] = {}
    for const in _all_code(code):
        found.setdefault(const.co_qualname, const)
    return found


def _find_function(qualname: str, ns: dict[str, Any]) -> types.FunctionType | None:
    if "<locals>" in qualname:
        return None  # a nested function is made anew by each call of its parent
    parts = qualname.split(".")
    obj: Any = ns.get(parts[0])
    for part in parts[1:]:
        obj = vars(obj).get(part) if isinstance(obj, type) else None
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return obj if isinstance(obj, types.FunctionType) else None
