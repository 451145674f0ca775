"""Finding a script's live functions and the code objects of a new version of it, so that a
swap hands each function its new body and a resumed call gets its arguments back."""

from __future__ import annotations

import inspect
import types
from typing import Any

__all__ = ["call_arguments", "code_objects", "find_function"]


def _all_code(code: types.CodeType) -> list[types.CodeType]:
    found = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.append(const)
            found.extend(_all_code(const))
    return found


def code_objects(code: types.CodeType) -> dict[str, types.CodeType]:
    """Code objects by qualname; for a name defined twice, the first (diff does the same)."""
    found: dict[str, types.CodeType] = {}
    for const in _all_code(code):
        found.setdefault(const.co_qualname, const)
    return found


def find_function(
    qualname: str, ns: dict[str, Any], code: types.CodeType | None = None
) -> types.FunctionType | None:
    """The function object named ``qualname`` in ``ns`` (whose code is ``code``, if given),
    through the decorators that keep it: staticmethod, classmethod, property, functools.wraps
    (``__wrapped__``: lru_cache, contextmanager, ...)."""
    if "<locals>" in qualname:
        return None  # a nested function is made anew by each call of its parent
    parts = qualname.split(".")
    obj: Any = ns.get(parts[0])
    for part in parts[1:]:
        obj = vars(obj).get(part) if isinstance(obj, type) else None
    todo, seen = [obj], 0
    while todo and seen < 16:
        obj, seen = todo.pop(0), seen + 1
        if isinstance(obj, types.FunctionType) and (code is None or obj.__code__ is code):
            return obj
        if isinstance(obj, property):
            todo += [obj.fget, obj.fset, obj.fdel]
            continue
        try:
            todo += [getattr(obj, name, None) for name in ("__func__", "__wrapped__")]
        except Exception:  # a user object's __getattr__ may raise anything
            continue
    return None


def call_arguments(code: types.CodeType, values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
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
