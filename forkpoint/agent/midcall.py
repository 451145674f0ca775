"""Continuing a call from a checkpoint inside it, with the function's new code.

The old frame stays suspended at the site; the new code runs in a function built from the
rest of the new body (``forkpoint.instrument.lines.remainder``) with the old frame's locals and
cells, and its result (or exception) goes back through the old frame, which from then on only
lets it pass: its ``except`` clauses re-raise, its ``finally`` clauses and ``with`` exits are
skipped, since the new code ran its own.
"""

from __future__ import annotations

import ast
import sys
import types
from collections.abc import Callable
from typing import Any

from forkpoint.instrument import lines as sitelines
from forkpoint.instrument.diff import functions
from forkpoint.instrument.remainder import remainder
from forkpoint.instrument.rewrite import Sites, closure_names, rewrite_functions

__all__ = ["Guard", "build", "is_passing", "passing", "resumed"]

_passing: set[types.FrameType] = set()  # old frames whose call goes on in new code


def is_passing(frame: types.FrameType) -> bool:
    return frame in _passing


def passing() -> bool:
    """In a rewritten ``except`` or ``finally``: is this frame an old one letting things pass?"""
    return bool(_passing) and sys._getframe(1) in _passing


class Guard:
    """A ``with`` statement's context manager, as a site's enclosing ``with`` holds it: its
    exit is skipped once new code has taken the block over (``resumed``)."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.holder: object = self

    def __enter__(self) -> Any:
        return type(self.manager).__enter__(self.manager)

    def __exit__(self, *exc: Any) -> Any:
        if self.holder is not self:
            return False
        return type(self.manager).__exit__(self.manager, *exc)


class _Resumed:
    """The same block in the new code: entering does nothing (it was entered), exiting exits."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        self.guard.holder = self

    def __exit__(self, *exc: Any) -> Any:
        if self.guard.holder is not self:
            return False  # taken over again by a later resume
        return type(self.guard.manager).__exit__(self.guard.manager, *exc)


def resumed(guard: Guard) -> _Resumed:
    return _Resumed(guard)


def build(
    old: str,
    new: str,
    path: str,
    qualname: str,
    line: int,
    frame: types.FrameType,
    cells: Callable[[], Any] | None,
    sites: Sites,
) -> Callable[[], Any]:
    """The call's rest in the new code, ready to run; marks ``frame`` as passing."""
    site = sitelines.locate(ast.parse(old, path), line)
    if site is None:
        raise RuntimeError(f"forkpoint: no site on line {line} of {qualname}")
    tree = ast.parse(new, path)
    func = functions(tree).get(qualname)
    if func is None or sitelines.statement_at(func, site.path) is None:
        raise RuntimeError(f"forkpoint: {qualname} has no statement where the checkpoint was")
    target, chain = sitelines.enclosing(func, site.path)
    rewrite_functions(tree, new, path, sites, marked=False)
    values = dict(frame.f_locals)
    old_cells = _cells(cells)
    wanted = closure_names(new, path).get(qualname, ())
    closure = list(dict.fromkeys([*old_cells, *wanted]))
    first = _first_parameter(func)
    if first is not None and (first in closure or first not in values):
        first = None
    owner = _owner(qualname)
    module = remainder(func, target, chain, sorted(values), closure, first, owner)
    code = _inner_code(compile(module, path, "exec", dont_inherit=True))
    code = code.replace(co_name=func.name, co_qualname=qualname)
    ns = frame.f_globals
    cellmap = {
        name: old_cells.get(name) or _new_cell(name, values, qualname, ns) for name in code.co_freevars
    }
    rest = types.FunctionType(code, ns, func.name, None, tuple(cellmap[n] for n in code.co_freevars))
    _passing.add(frame)
    args = (values[first], values) if first is not None else (values,)
    return lambda: rest(*args)


def _cells(carrier: Callable[[], Any] | None) -> dict[str, types.CellType]:
    if carrier is None or carrier.__closure__ is None:
        return {}
    return dict(zip(carrier.__code__.co_freevars, carrier.__closure__, strict=True))


def _new_cell(name: str, values: dict[str, Any], qualname: str, ns: dict[str, Any]) -> types.CellType:
    """A cell the old call did not have: for a local the new code captures, or ``__class__``."""
    if name == "__class__":
        owner: Any = ns.get(qualname.split(".")[0])
        for part in qualname.split(".")[1:-1]:
            owner = getattr(owner, part, None)
        if isinstance(owner, type):
            return types.CellType(owner)
    if name in values:
        return types.CellType(values[name])
    if "<locals>" in qualname:
        raise RuntimeError(f"forkpoint: the new code of {qualname} uses {name} of an enclosing function")
    return types.CellType()


def _first_parameter(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    params = func.args.posonlyargs + func.args.args
    return params[0].arg if params else None


def _owner(qualname: str) -> str | None:
    """The class a method is defined in (for private-name mangling), if any."""
    parts = qualname.split(".")
    if len(parts) >= 2 and parts[-2] != "<locals>":
        return parts[-2]
    return None


def _inner_code(code: types.CodeType) -> types.CodeType:
    todo = [code]
    while todo:
        current = todo.pop()
        for const in current.co_consts:
            if isinstance(const, types.CodeType):
                if const.co_name == sitelines.REST_NAME:
                    return const
                todo.append(const)
    raise RuntimeError("forkpoint: no code in the remainder")
