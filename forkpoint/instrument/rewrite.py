"""The AST rewrite that puts checkpoint sites into a script: inserted statements, so code away
from a site runs at full speed.

Like pytest's assertion rewriting, the names it injects are not valid identifiers
(``@forkpoint_site``), so they never clash with user code, and every original statement keeps
its source position (tracebacks and ``inspect`` point at the user's lines).
"""

from __future__ import annotations

import ast

__all__ = ["SITE_NAME", "compile_script", "rewrite_top_level"]

SITE_NAME = "@forkpoint_site"


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


def compile_script(source: str, path: str, start: int = 0) -> object:
    """Compile ``source`` (or its statements from index ``start`` on) with sites inserted."""
    tree = ast.parse(source, path)
    tree.body = tree.body[start:]
    return compile(rewrite_top_level(tree, start), path, "exec", dont_inherit=True)
