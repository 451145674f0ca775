"""The guard every function site is made of, built in one place.

``@forkpoint_result = <site call>; if @forkpoint_result is not @forkpoint_continue: return
@forkpoint_result``: the site returns the continue marker when the call goes on as it is, and
anything else when a resumed head ran the call's new code (or its remainder) in its place, whose
value the old frame then returns as its own. The names are not valid identifiers, so user code
can never clash with them (as pytest's assertion rewriting does).
"""

from __future__ import annotations

import ast

__all__ = ["CONTINUE_NAME", "RESULT_NAME", "site_guard"]

CONTINUE_NAME = "@forkpoint_continue"
RESULT_NAME = "@forkpoint_result"


def site_guard(site: ast.Call) -> list[ast.stmt]:
    """The two statements of a guard around ``site`` (positions are the caller's to set)."""
    assign = ast.Assign([ast.Name(RESULT_NAME, ast.Store())], site)
    test = ast.Compare(
        ast.Name(RESULT_NAME, ast.Load()), [ast.IsNot()], [ast.Name(CONTINUE_NAME, ast.Load())]
    )
    return [assign, ast.If(test, [ast.Return(ast.Name(RESULT_NAME, ast.Load()))], [])]
