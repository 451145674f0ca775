"""Checkpoints before a statement inside a function (``--checkpoint-at FILE:LINE``), and the
paths and names that ``remainder`` (which continues such a call with an edited body) uses.

A site is found by its *path*: the chain of statement lists from the function's body down to
the statement (``("body", 2), ("handlers.0", 1)``: the second statement of the first handler
of the try that is the function's third statement). An edit keeps a checkpoint usable when
everything on the way to it is unchanged (``prefix_key``); the same path then finds the site
in the new code, and ``remainder`` builds a function that runs the new code from there on:
the rest of each enclosing block, the remaining iterations of each enclosing loop (from an
iterator the rewrite keeps in a hidden local), the handlers and ``finally`` of each enclosing
``try``, and the exits of each enclosing ``with`` (kept in hidden locals by the rewrite too).

The old frame, still suspended at the site, only hands the remainder's result back: the
rewrite makes its enclosing ``except`` and ``finally`` clauses and ``with`` exits let it pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from forkpoint.instrument.diff import _all_functions, normalized
from forkpoint.instrument.guard import site_guard

__all__ = [
    "COUNT_NAME",
    "GUARD_NAME",
    "LINE_NAME",
    "PASSING_NAME",
    "RESUMED_NAME",
    "LineSite",
    "NotASite",
    "Step",
    "follow_line",
    "insert_line_sites",
    "is_generator",
    "locate",
    "prefix_key",
    "enclosing",
    "statement_at",
]

LINE_NAME = "@forkpoint_line"
COUNT_NAME = "@forkpoint_count"
GUARD_NAME = "@forkpoint_guard"
RESUMED_NAME = "@forkpoint_resumed"
PASSING_NAME = "@forkpoint_passing"
LOCALS_NAME = "@forkpoint_locals"
FACTORY_NAME = "@forkpoint_factory"
REST_NAME = "@forkpoint_rest"
_ONCE = "@forkpoint_once"

Step = tuple[str, int]  # (which statement list of the statement above, index in it)
Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class LineSite:
    qualname: str
    line: int
    path: tuple[Step, ...]
    function: Function


class NotASite(Exception):
    """A line inside a function that cannot carry a site of its own: ``fallback`` is the
    function whose entry stands in for it, ``why`` says why in words."""

    def __init__(self, why: str, fallback: str) -> None:
        super().__init__(why)
        self.why, self.fallback = why, fallback


def _lists(stmt: ast.stmt) -> list[tuple[str, list[ast.stmt]]]:
    """The statement lists directly inside ``stmt``, by name."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []  # another scope
    found: list[tuple[str, list[ast.stmt]]] = []
    for name in ("body", "orelse", "finalbody"):
        value = getattr(stmt, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            found.append((name, value))
    for i, handler in enumerate(getattr(stmt, "handlers", [])):
        found.append((f"handlers.{i}", handler.body))
    for i, case in enumerate(getattr(stmt, "cases", [])):
        found.append((f"cases.{i}", case.body))
    return found


def _find(stmts: list[ast.stmt], field: str, line: int) -> tuple[Step, ...] | None:
    for i, stmt in enumerate(stmts):
        if stmt.lineno == line:
            return ((field, i),)
        if stmt.lineno < line <= (stmt.end_lineno or stmt.lineno):
            for name, inner in _lists(stmt):
                found = _find(inner, name, line)
                if found is not None:
                    return ((field, i), *found)
            return None
    return None


def is_generator(func: Function) -> bool:
    """A generator or coroutine: its calls cannot be entered again or continued from inside."""
    if isinstance(func, ast.AsyncFunctionDef):
        return True
    return any(isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)) for node in _own_scope(func.body))


def _own_scope(stmts: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of a function's own scope: not inside nested functions, classes, lambdas."""
    todo: list[ast.AST] = list(stmts)
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                todo.append(child)


def locate(tree: ast.Module, line: int) -> LineSite | None:
    """The site before the statement starting on ``line`` in its innermost function; None when
    that statement is not inside a function. Raises ``NotASite`` where only the function's
    entry can stand in (generators and coroutines, ``finally`` clauses, ``except*``)."""
    best: LineSite | None = None
    for qualname, func in _all_functions(tree):
        if not func.lineno <= line <= (func.end_lineno or func.lineno):
            continue
        path = _find(func.body, "body", line)
        if path is not None and (best is None or func.lineno >= best.function.lineno):
            best = LineSite(qualname, line, path, func)
    if best is None:
        return None
    if is_generator(best.function):
        raise NotASite(f"{best.qualname} is a generator or coroutine", best.qualname)
    for stmt, (field, _) in zip(_containers(best.function, best.path), best.path[1:], strict=True):
        if field == "finalbody":
            raise NotASite(f"line {line} is in a finally clause", best.qualname)
        if isinstance(stmt, ast.TryStar):
            raise NotASite(f"line {line} is in a try with except*", best.qualname)
    return best


def _containers(func: Function, path: tuple[Step, ...]) -> list[ast.stmt]:
    """The compound statements enclosing the site, outermost first."""
    found = []
    stmts: list[ast.stmt] = func.body
    for (_, index), (inner, _) in zip(path, path[1:], strict=False):
        found.append(stmts[index])
        stmts = dict(_lists(stmts[index]))[inner]
    return found


def _list_at(func: Function, path: tuple[Step, ...]) -> list[list[ast.stmt]] | None:
    """The statement list at each level of ``path``; None when the path is not there."""
    lists = []
    stmts: list[ast.stmt] | None = func.body
    for depth, (_, index) in enumerate(path):
        if stmts is None or index >= len(stmts):
            return None
        lists.append(stmts)
        if depth + 1 < len(path):
            stmts = dict(_lists(stmts[index])).get(path[depth + 1][0])
    return lists


def statement_at(func: Function, path: tuple[Step, ...]) -> ast.stmt | None:
    lists = _list_at(func, path)
    return None if lists is None else lists[-1][path[-1][1]]


def _header(stmt: ast.stmt, field: str) -> str:
    """What of an enclosing statement has run by the time the site inside it runs."""
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        parts: list[ast.AST] = [stmt.target, stmt.iter]
    elif isinstance(stmt, (ast.While, ast.If)):
        parts = [stmt.test]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        parts = list(stmt.items)
    elif isinstance(stmt, ast.Try) and field.startswith("handlers."):
        handler = stmt.handlers[int(field.split(".")[1])]
        parts = [handler.type] if handler.type is not None else []
        return "|".join(normalized(p) for p in parts) + f"|{handler.name}"
    elif isinstance(stmt, ast.Match):
        case = stmt.cases[int(field.split(".")[1])]
        parts = [stmt.subject, case.pattern] + ([case.guard] if case.guard is not None else [])
    else:
        parts = []
    return type(stmt).__name__ + "|" + "|".join(normalized(p) for p in parts)


def prefix_key(func: Function, path: tuple[Step, ...]) -> str | None:
    """Everything that has run in a call when it reaches the site: the signature, the
    statements before the site at each level and the headers of the enclosing statements.
    Equal keys mean a checkpoint at the site can go on with the other version's code."""
    lists = _list_at(func, path)
    if lists is None:
        return None
    parts = [normalized(func.args)]
    for depth, ((field, index), stmts) in enumerate(zip(path, lists, strict=True)):
        parts.append(field)
        parts.extend(normalized(s) for s in stmts[:index])
        if depth + 1 < len(path):
            parts.append(_header(stmts[index], path[depth + 1][0]))
    return "\n".join(parts)


def follow_line(old: ast.Module, new: ast.Module, line: int) -> int | None:
    """Where the site on ``line`` of ``old`` is in ``new`` (the same path in the same function),
    or None when the edit took it away."""
    try:
        site = locate(old, line)
    except NotASite:
        return None
    if site is None:
        return None
    func = dict(_all_functions(new)).get(site.qualname)
    stmt = statement_at(func, site.path) if func is not None else None
    return stmt.lineno if stmt is not None else None


# ---------------------------------------------------------------------------- the rewrite


def _at(node: ast.AST, where: ast.AST) -> ast.AST:
    for sub in ast.walk(node):
        ast.copy_location(sub, where)
        sub.end_lineno = getattr(where, "lineno", None)  # type: ignore[attr-defined]
    return node


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(name, ast.Load()), list(args), [])


def _name(name: str, store: bool = False) -> ast.Name:
    return ast.Name(name, ast.Store() if store else ast.Load())


def _site_statements(qualname: str, stmt: ast.stmt, cells: tuple[str, ...]) -> list[ast.stmt]:
    """``@r = @forkpoint_line(qualname, line, cells); if @r is not @continue: return @r``."""
    carrier: ast.expr = ast.Constant(None)
    if cells:
        empty = ast.arguments([], [], None, [], [], None, [])
        carrier = ast.Lambda(empty, ast.Tuple([_name(n) for n in cells], ast.Load()))
    guard = site_guard(_call(LINE_NAME, ast.Constant(qualname), ast.Constant(stmt.lineno), carrier))
    return [_at(part, stmt) for part in guard]  # type: ignore[misc]


def _iter_name(depth: int) -> str:
    return f"@forkpoint_iter{depth}"


def _with_name(depth: int, item: int) -> str:
    return f"@forkpoint_with{depth}_{item}"


def _passing_check(where: ast.stmt) -> ast.stmt:
    """``if @forkpoint_passing(): raise``: an old frame lets the new code's exception through."""
    return _at(ast.If(_call(PASSING_NAME), [ast.Raise()], []), where)  # type: ignore[return-value]


def _prepare_container(stmt: ast.stmt, field: str, depth: int, parent: list[ast.stmt]) -> None:
    """Make a compound statement enclosing a site resumable (once per statement)."""
    if getattr(stmt, "_forkpoint_prepared", False):
        return
    stmt._forkpoint_prepared = True  # type: ignore[attr-defined]
    if isinstance(stmt, ast.For):
        keep = _at(ast.Assign([_name(_iter_name(depth), True)], _call("iter", stmt.iter)), stmt)
        stmt.iter = _at(_name(_iter_name(depth)), stmt.iter)  # type: ignore[assignment]
        parent.insert(parent.index(stmt), keep)  # type: ignore[arg-type]
    elif isinstance(stmt, ast.With):
        for i, item in enumerate(stmt.items):
            guarded = ast.NamedExpr(_name(_with_name(depth, i), True), _call(GUARD_NAME, item.context_expr))
            item.context_expr = _at(guarded, item.context_expr)  # type: ignore[assignment]
    elif isinstance(stmt, ast.Try):
        for handler in stmt.handlers:
            handler.body.insert(0, _passing_check(handler.body[0]))
        if stmt.finalbody:
            first = stmt.finalbody[0]
            guard = ast.If(ast.UnaryOp(ast.Not(), _call(PASSING_NAME)), stmt.finalbody, [])
            stmt.finalbody = [_at(guard, first)]  # type: ignore[list-item]
            ast.copy_location(guard, first)


def insert_line_sites(
    tree: ast.Module,
    lines: frozenset[int],
    cells: dict[str, tuple[str, ...]],
    counted: frozenset[str],
    key_prefix: str = "",
) -> None:
    """Put a site before the statement on each of ``lines`` that is inside a function.

    ``cells`` gives each function's closure names (a lambda over them hands the cells to the
    new code); functions whose key (``key_prefix`` + qualname) is not in ``counted`` get a
    call counter first.
    """
    sites = []
    for line in sorted(lines):
        try:
            site = locate(tree, line)
        except NotASite:
            continue
        if site is not None:
            sites.append(site)
    counting: dict[str, Function] = {}
    for site in sites:  # containers first: their lists change as statements go in
        lists = _list_at(site.function, site.path)
        assert lists is not None
        target, chain = enclosing(site.function, site.path)
        for depth, (stmt, field) in enumerate(chain):
            _prepare_container(stmt, field, depth, lists[depth])
        stmts = lists[-1]
        index = next(i for i, s in enumerate(stmts) if s is target)
        key = key_prefix + site.qualname
        stmts[index:index] = _site_statements(key, target, cells.get(site.qualname, ()))
        counting[key] = site.function
    for key, func in counting.items():
        if key not in counted:
            doc = 1 if ast.get_docstring(func, clean=False) is not None else 0
            func.body.insert(doc, _at(ast.Expr(_call(COUNT_NAME, ast.Constant(key))), func.body[0]))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the remainder


def enclosing(func: Function, path: tuple[Step, ...]) -> tuple[ast.stmt, list[tuple[ast.stmt, str]]]:
    """The statement at ``path`` and its enclosing statements with the list each site is in,
    outermost first: node references that stay valid while the rewrite inserts statements."""
    target = statement_at(func, path)
    assert target is not None
    return target, [(stmt, field) for stmt, (field, _) in zip(_containers(func, path), path[1:], strict=True)]
