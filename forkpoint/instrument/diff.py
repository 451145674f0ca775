"""What an edit changed, per top-level statement and per function, ignoring formatting.

Units are compared by ``ast.dump`` without positions, so comments, blank lines and
reformatting are no change, while any change of code (docstrings included) is. The running
program is compared with the exact source it was compiled from, never with an older file.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

__all__ = ["SourceDiff", "diff_sources", "functions", "normalized"]


@dataclass(frozen=True)
class SourceDiff:
    """The difference between two versions of one module."""

    first_changed_statement: int | None  # index of the first top-level statement that differs
    # the first whose change is more than new code in function bodies (which a swap handles)
    first_unswappable: int | None = None
    changed_functions: frozenset[str] = field(default_factory=frozenset)  # qualnames
    added_functions: frozenset[str] = field(default_factory=frozenset)
    removed_functions: frozenset[str] = field(default_factory=frozenset)

    @property
    def unchanged(self) -> bool:
        return self.first_changed_statement is None and not (
            self.changed_functions or self.added_functions or self.removed_functions
        )


def normalized(node: ast.AST) -> str:
    return ast.dump(node, annotate_fields=False, include_attributes=False)


def _without_bodies(node: ast.stmt) -> str:
    """The statement with every function body blanked: equal before and after an edit when
    only code inside functions changed, which swapping ``__code__`` can apply to live objects."""
    copy = ast.parse(ast.unparse(node)).body[0]
    for sub in ast.walk(copy):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
            sub.body = [ast.Pass()]
    return normalized(copy)


def _defined_twice(tree: ast.AST) -> set[str]:
    names = [name for name, _ in _all_functions(tree)]
    return {name for name in names if names.count(name) > 1}


def functions(tree: ast.AST) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function and method by qualified name (``Class.method``, ``f.<locals>.g``);
    for a name defined twice, the first definition."""
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for name, node in _all_functions(tree):
        found.setdefault(name, node)
    return found


def _all_functions(tree: ast.AST) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found.append((name, child))
                visit(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def diff_sources(old: str, new: str) -> SourceDiff:
    """Compare two sources; raises SyntaxError (with the new file's position) if ``new`` is broken."""
    old_tree, new_tree = ast.parse(old), ast.parse(new)
    first = unswappable = None
    old_body, new_body = old_tree.body, new_tree.body
    twice = _defined_twice(old_tree) | _defined_twice(new_tree)
    for i in range(max(len(old_body), len(new_body))):
        if i >= len(old_body) or i >= len(new_body):
            first = i if first is None else first
            unswappable = i
            break
        if normalized(old_body[i]) == normalized(new_body[i]):
            continue
        first = i if first is None else first
        defines = set(functions(old_body[i])) | set(functions(new_body[i]))
        stmt = old_body[i]
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defines.add(stmt.name)
        if _without_bodies(old_body[i]) != _without_bodies(new_body[i]) or defines & twice:
            unswappable = i  # a name defined twice: which live function is which is unclear
            break
    old_funcs = {name: normalized(node) for name, node in functions(old_tree).items()}
    new_funcs = {name: normalized(node) for name, node in functions(new_tree).items()}
    return SourceDiff(
        first,
        unswappable,
        frozenset(n for n in old_funcs.keys() & new_funcs.keys() if old_funcs[n] != new_funcs[n]),
        frozenset(new_funcs.keys() - old_funcs.keys()),
        frozenset(old_funcs.keys() - new_funcs.keys()),
    )
