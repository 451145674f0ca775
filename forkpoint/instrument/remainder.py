"""The rest of a call, built from an edited function's AST (``--checkpoint-at FILE:LINE``).

A resumed head that stopped at a line site of a changed function runs ``remainder``: a
function holding the new code from the site on: the rest of each enclosing block, the
remaining iterations of each enclosing loop (from an iterator the rewrite keeps in a hidden
local), the handlers and ``finally`` of each enclosing ``try``, and the exits of each enclosing
``with`` (kept in hidden locals by the rewrite too). Paths to a site are ``lines``'s.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

from forkpoint.instrument.lines import (
    _ONCE,
    FACTORY_NAME,
    LOCALS_NAME,
    REST_NAME,
    RESUMED_NAME,
    Function,
    _at,
    _call,
    _lists,
    _name,
    _own_scope,
    _with_name,
)

__all__ = ["remainder"]


def _once(body: list[ast.stmt], then: list[ast.stmt], where: ast.stmt) -> ast.stmt:
    """``for @once in (None,): body`` with ``else: then``: ``continue`` in ``body`` goes on to
    ``then`` (the remaining iterations), ``break`` skips it, as in the loop it came from."""
    loop = ast.For(_name(_ONCE, True), ast.Tuple([ast.Constant(None)], ast.Load()), body, then)
    _at(loop.target, where)
    _at(loop.iter, where)
    return ast.copy_location(loop, where)


def _wrap(stmt: ast.stmt, field: str, inner: list[ast.stmt], depth: int) -> list[ast.stmt]:
    """The rest of enclosing statement ``stmt`` (already prepared by the rewrite) when the rest
    of its list ``field`` is ``inner``."""
    if isinstance(stmt, (ast.For, ast.While)) and field == "body":
        return [_once(inner, [stmt], stmt)]  # a for reads the iterator kept in a hidden local
    if isinstance(stmt, ast.With):
        items = [
            ast.withitem(_at(_call(RESUMED_NAME, _name(_with_name(depth, i))), stmt))  # type: ignore[arg-type]
            for i in range(len(stmt.items))
        ]
        return [ast.copy_location(ast.With(items, inner), stmt)]
    if isinstance(stmt, ast.Try):
        if field == "body":
            return [ast.copy_location(ast.Try(inner, stmt.handlers, stmt.orelse, stmt.finalbody), stmt)]
        if stmt.finalbody:
            return [ast.copy_location(ast.Try(inner, [], [], stmt.finalbody), stmt)]
    return inner  # if, match, a loop's else, a handler or else without finally: the rest as is


def _rest(func: Function, target: ast.stmt, chain: list[tuple[ast.stmt, str]]) -> list[ast.stmt]:
    lists = [func.body] + [dict(_lists(stmt))[field] for stmt, field in chain]
    body = lists[-1][_index(lists[-1], target) :]
    for depth in range(len(chain) - 1, -1, -1):
        stmt, field = chain[depth]
        outer = lists[depth]
        body = _wrap(stmt, field, body, depth) + outer[_index(outer, stmt) + 1 :]
    return body


def _index(stmts: list[ast.stmt], node: ast.stmt) -> int:
    return next(i for i, s in enumerate(stmts) if s is node)


def _strip_declarations(stmts: list[ast.stmt]) -> tuple[list[str], list[str]]:
    """Take ``global`` and ``nonlocal`` statements out of the function's own scope (the
    remainder declares them first); returns the names."""
    globals_: list[str] = []
    nonlocals: list[str] = []
    for node in _own_scope(stmts):
        for name, value in ast.iter_fields(node):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.Global):
                        globals_.extend(item.names)
                        value[i] = ast.copy_location(ast.Pass(), item)
                    elif isinstance(item, ast.Nonlocal):
                        nonlocals.extend(item.names)
                        value[i] = ast.copy_location(ast.Pass(), item)
            del name
    return globals_, nonlocals


def remainder(
    func: Function,
    target: ast.stmt,
    chain: list[tuple[ast.stmt, str]],
    plain: list[str],
    closure: list[str],
    first: str | None,
    owner: str | None,
) -> ast.Module:
    """A module defining ``@forkpoint_factory``, whose inner function runs ``func`` (rewritten
    with its sites) from ``target`` on. ``first`` (the call's first argument, kept a parameter
    for ``super()``) and ``@forkpoint_locals`` are its parameters; the ``plain`` locals are
    read from the latter; the ``closure`` names are the old call's cells. It sits inside
    ``class owner`` for a method, so private names are mangled as in the original."""
    globals_, _ = _strip_declarations(func.body)
    body = _rest(func, target, chain)
    where = body[0]
    head: list[ast.stmt] = []
    declared = [n for n in closure if n != "__class__" or owner is None]
    if declared:
        head.append(ast.Nonlocal(declared))
    if globals_:
        head.append(ast.Global(sorted(set(globals_))))
    for name in plain:
        if name != first and name not in closure and name not in (LOCALS_NAME, _ONCE):
            value = ast.Subscript(_name(LOCALS_NAME), ast.Constant(name), ast.Load())
            head.append(ast.Assign([_name(name, True)], value))
    params = [ast.arg(first)] if first else []
    params.append(ast.arg(LOCALS_NAME))
    inner = _function(REST_NAME, params, head + body)  # named later: a def named like the
    # function would make the function's own name (recursion) a local of the factory
    factory_body: list[ast.stmt] = []
    if declared:
        factory_body.append(ast.Assign([_name(n, True) for n in declared], ast.Constant(None)))
    factory_body += [inner, ast.Return(_name(REST_NAME))]
    top: list[ast.stmt] = [_function(FACTORY_NAME, [], factory_body)]
    if owner is not None:
        top = [ast.ClassDef(name=owner, bases=[], keywords=[], body=top, decorator_list=[], **_type_params())]
    for node in top:
        for sub in ast.walk(node):
            if isinstance(sub, (ast.stmt, ast.expr)) and not hasattr(sub, "lineno"):
                ast.copy_location(sub, where)
                sub.end_lineno = where.lineno
    return ast.fix_missing_locations(ast.Module(top, []))


def _type_params() -> dict[str, Any]:
    return {"type_params": []} if sys.version_info >= (3, 12) else {}


def _function(name: str, params: list[ast.arg], body: list[ast.stmt]) -> ast.FunctionDef:
    args = ast.arguments(posonlyargs=[], args=params, kwonlyargs=[], kw_defaults=[], defaults=[])
    return ast.FunctionDef(name=name, args=args, body=body, decorator_list=[], returns=None, **_type_params())
