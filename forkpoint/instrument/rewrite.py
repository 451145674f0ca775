"""The AST rewrite that puts checkpoint sites into a script: inserted statements, so code away
from a site runs at full speed.

Like pytest's assertion rewriting, the names it injects are not valid identifiers
(``@forkpoint_site``), so they never clash with user code, and every original statement keeps
its source position (tracebacks and ``inspect`` point at the user's lines).
"""

from __future__ import annotations

import ast
import dis
import types
from collections.abc import Callable
from dataclasses import dataclass

from forkpoint.instrument.codecache import cached
from forkpoint.instrument.guard import CONTINUE_NAME, site_guard
from forkpoint.instrument.lines import insert_line_sites, is_generator

__all__ = [
    "CALLED_NAME",
    "CONTINUE_NAME",
    "ENTRY_NAME",
    "SITE_NAME",
    "Sites",
    "closure_names",
    "compile_module",
    "compile_script",
    "mark_functions",
    "rewrite_functions",
    "rewrite_top_level",
]

SITE_NAME = "@forkpoint_site"
CALLED_NAME = "@forkpoint_called"
ENTRY_NAME = "@forkpoint_entry"


# Statements that only define names. A checkpoint between two of them is *light*: worth its
# fork only when the statement before it took long (a class body that computes, an import
# that runs a module). The one before the first statement that does work is always taken.
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)


def _site_call(index: int, after: ast.stmt, light: bool) -> ast.stmt:
    args: list[ast.expr] = [ast.Constant(index), ast.Constant(light)]
    call = ast.Expr(ast.Call(ast.Name(SITE_NAME, ast.Load()), args, []))
    line = after.end_lineno or after.lineno
    for node in ast.walk(call):
        node.lineno = node.end_lineno = line  # type: ignore[attr-defined]
        node.col_offset = node.end_col_offset = 0  # type: ignore[attr-defined]
    return call


def _is_prologue(stmt: ast.stmt) -> bool:
    """A docstring or ``from __future__`` import: nothing may come before the latter."""
    if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
        return True
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def rewrite_top_level(tree: ast.Module, start: int = 0) -> ast.Module:
    """A site after each top-level statement (numbered from ``start``), but the last one
    and the leading docstring and ``__future__`` imports."""
    body: list[ast.stmt] = []
    prologue = True
    for offset, stmt in enumerate(tree.body):
        body.append(stmt)
        prologue = prologue and _is_prologue(stmt)
        if not prologue and offset < len(tree.body) - 1:
            light = isinstance(stmt, _DEFINITIONS) and isinstance(tree.body[offset + 1], _DEFINITIONS)
            body.append(_site_call(start + offset, stmt, light))
    return ast.Module(body=body, type_ignores=tree.type_ignores)


def _entry_site(qualname: str, first: ast.stmt) -> list[ast.stmt]:
    """``@r = @forkpoint_entry(qualname, locals()); if @r is not @continue: return @r``:
    a checkpoint at the call's entry that a resumed head answers by calling the new code."""
    call = ast.Call(
        ast.Name(ENTRY_NAME, ast.Load()),
        [ast.Constant(qualname), ast.Call(ast.Name("locals", ast.Load()), [], [])],
        [],
    )
    assign, check = site_guard(call)
    for stmt in (assign, check):
        for sub in ast.walk(stmt):
            sub.lineno = sub.end_lineno = first.lineno  # type: ignore[attr-defined]
            sub.col_offset = sub.end_col_offset = 0  # type: ignore[attr-defined]
    return [assign, check]


def mark_functions(
    tree: ast.Module, called: bool = True, entries: frozenset[str] = frozenset(), key_prefix: str = ""
) -> ast.Module:
    """Put ``@forkpoint_called("key")`` first in every function that is not nested (the key is
    its qualname, after ``key_prefix``, "module:", outside the script).

    The runtime records the first call (so resume knows which finished work ran code that has
    since changed) and then swaps in the unmarked code: after its first call a function runs
    at full speed. Nested functions are covered by their parent, whose source holds theirs.
    """

    def visit(node: ast.AST, outer: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = key_prefix + outer + child.name
                doc = 1 if ast.get_docstring(child, clean=False) is not None else 0
                marker = ast.Expr(ast.Call(ast.Name(CALLED_NAME, ast.Load()), [ast.Constant(qualname)], []))
                for sub in ast.walk(marker):
                    sub.lineno = sub.end_lineno = child.body[0].lineno  # type: ignore[attr-defined]
                    sub.col_offset = sub.end_col_offset = 0  # type: ignore[attr-defined]
                first = child.body[doc] if doc < len(child.body) else child.body[0]
                if qualname in entries and not is_generator(child):
                    child.body[doc:doc] = _entry_site(qualname, first)
                if called:
                    child.body.insert(doc, marker)
            elif isinstance(child, ast.ClassDef):
                visit(child, outer + child.name + ".")

    visit(tree, "")
    return tree


_JUMP_FORWARD = dis.opmap["JUMP_FORWARD"]
# What the compiler puts before a function's first statement.
_PROLOGUE = {"RESUME", "MAKE_CELL", "COPY_FREE_VARS", "RETURN_GENERATOR", "POP_TOP", "NOP", "CACHE"}


def unmarked(code: types.CodeType) -> types.CodeType | None:
    """``code`` with its first-call marker jumped over, or None if it has none.

    The marker's instructions (load ``@forkpoint_called``, its key, call, pop) stay where they
    are and a ``JUMP_FORWARD`` over them takes the place of the first: every offset, the line
    table, the exception table and the code's flags stay as they were, so no second compile
    is needed (it cost as much as the first: 0.26 s for a 9,000-line module) and a flag that
    a decorator set on the live code (``types.coroutine``'s) is kept.
    """
    raw = code.co_code  # unquickened: inline caches read as CACHE, so units can be walked
    start = extended = None
    arg = 0
    for at in range(0, len(raw), 2):
        name = dis.opname[raw[at]]
        arg = (arg << 8) | raw[at + 1] if extended is not None else raw[at + 1]
        if name == "EXTENDED_ARG":
            extended = at if extended is None else extended
            continue
        first, extended = extended if extended is not None else at, None
        if start is None:
            if name == "LOAD_GLOBAL" and code.co_names[arg >> 1] == CALLED_NAME:
                start = first
            elif name not in _PROLOGUE:
                return None  # the marker comes first in the body: past the prologue, there is none
        elif name == "POP_TOP":
            skip = (at - start) // 2
            if skip > 255:
                return None
            patched = bytearray(raw)
            patched[start : start + 2] = bytes((_JUMP_FORWARD, skip))
            return code.replace(co_code=bytes(patched))
    return None


@dataclass(frozen=True)
class Sites:
    """Where a script takes checkpoints besides after each top-level statement: at the entry
    of the functions in ``entries``, before the statements on ``lines`` inside functions."""

    entries: frozenset[str] = frozenset()  # keys: qualname in the script, module:qualname elsewhere
    lines: frozenset[int] = frozenset()  # in this file
    prefix: str = ""  # what makes a qualname of this file a key: "" for the script, "module:"


def closure_names(source: str, path: str) -> dict[str, tuple[str, ...]]:
    """Each function's cell and free variables, by qualname (the first of a name defined twice)."""
    found: dict[str, tuple[str, ...]] = {}
    todo = [compile(source, path, "exec", dont_inherit=True)]
    while todo:
        code = todo.pop()
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found.setdefault(const.co_qualname, const.co_cellvars + const.co_freevars)
                todo.append(const)
    return found


def rewrite_functions(tree: ast.Module, source: str, path: str, sites: Sites, marked: bool) -> ast.Module:
    """Line sites first (they find statements by line, before anything is inserted), then
    entry sites and, if ``marked``, first-call markers."""
    if sites.lines:
        insert_line_sites(tree, sites.lines, closure_names(source, path), sites.entries, sites.prefix)
    return mark_functions(tree, marked, sites.entries, sites.prefix)


def _key(sites: Sites, *more: object) -> tuple[object, ...]:
    return (sorted(sites.entries), sorted(sites.lines), sites.prefix, *more)


def compile_script(
    source: str, path: str, start: int = 0, marked: bool = True, sites: Sites | None = None
) -> types.CodeType:
    """Compile ``source`` (or its statements from index ``start`` on) with sites inserted and,
    if ``marked``, first-call markers in its functions."""
    sites = sites or Sites()

    def build() -> types.CodeType:
        tree = rewrite_functions(ast.parse(source, path), source, path, sites, marked)
        tree.body = tree.body[start:]
        return compile(rewrite_top_level(tree, start), path, "exec", dont_inherit=True)

    return cached("script", source, path, _key(sites, start, marked), build)


def compile_module(
    source: str,
    path: str,
    marked: bool = True,
    sites: Sites | None = None,
    also: tuple[str, Callable[[ast.Module], None]] | None = None,
) -> types.CodeType:
    """Compile an imported module of the user's: sites in its functions, none at its top level
    (which runs once, at import). ``also`` is another rewrite, by name, that the module gets
    first (pytest's of its asserts, for a test module)."""
    sites = sites or Sites()

    def build() -> types.CodeType:
        tree = ast.parse(source, path)
        if also is not None:
            also[1](tree)
        tree = rewrite_functions(tree, source, path, sites, marked)
        return compile(tree, path, "exec", dont_inherit=True)

    return cached("module", source, path, _key(sites, marked, also and also[0]), build)
