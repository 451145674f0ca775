"""The AST rewrite that puts checkpoint sites into a script: inserted statements, so code away
from a site runs at full speed.

Like pytest's assertion rewriting, the names it injects are not valid identifiers
(``@forkpoint_site``), so they never clash with user code, and every original statement keeps
its source position (tracebacks and ``inspect`` point at the user's lines).
"""

from __future__ import annotations

import ast
import types
from dataclasses import dataclass

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


def _site_call(index: int, after: ast.stmt) -> ast.stmt:
    call = ast.Expr(ast.Call(ast.Name(SITE_NAME, ast.Load()), [ast.Constant(index)], []))
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
            body.append(_site_call(start + offset, stmt))
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


def compile_script(
    source: str, path: str, start: int = 0, marked: bool = True, sites: Sites | None = None
) -> types.CodeType:
    """Compile ``source`` (or its statements from index ``start`` on) with sites inserted and,
    if ``marked``, first-call markers in its functions."""
    tree = rewrite_functions(ast.parse(source, path), source, path, sites or Sites(), marked)
    tree.body = tree.body[start:]
    return compile(rewrite_top_level(tree, start), path, "exec", dont_inherit=True)


def compile_module(source: str, path: str, marked: bool = True, sites: Sites | None = None) -> types.CodeType:
    """Compile an imported module of the user's: sites in its functions, none at its top level
    (which runs once, at import)."""
    tree = rewrite_functions(ast.parse(source, path), source, path, sites or Sites(), marked)
    return compile(tree, path, "exec", dont_inherit=True)
