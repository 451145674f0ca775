"""The whole of a session's meta.json checked against its schema before any of it is used.

A meta.json is a file on disk that anything may have written: a wrong type anywhere (``tree: 5``,
``kept: [99]``, ``saved: 1e300``, ``checkpoint: true``) must make the session "damaged" in one
sentence, never a TypeError deep in a restore or a 31 s wait for a process that was never
going to connect. The schema is data: each field's kind, and whether it must be there.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["check_meta"]

# A kind: a type, a tuple of alternatives, ("list", kind), ("dict", kind), or a dict schema
# (field -> (kind, required)). bool is never an int here, nor an int a bool.
Kind = Any

_NUMBER = "number"  # a finite int or float within the years a session can be saved in
_HEX = "hex"
_ENTRY: dict[str, tuple[Kind, bool]] = {
    "id": (int, True),
    "token": (str, False),
    "parent": ((int, None), False),
    "source": (str, False),
    "label": ((str, None), False),
    "at_rest": (bool, False),
    "created": (_NUMBER, False),
    "site": ((int, None), False),
    "version": ((int, None), False),
    "called": (("list", str), False),
    "entry": ((str, None), False),
    "line": ((int, None), False),
    "call": ((int, None), False),
    "outer": (("list", str), False),
}
_SCRIPT: dict[str, tuple[Kind, bool]] = {
    "path": (str, True),
    "argv": (("list", str), True),
    "versions": (("list", str), True),
    "started": (_NUMBER, True),
    "entries": (("list", str), True),
    "lines": (("dict", ("list", int)), True),
    "watch": (("list", str), True),
    "modules": (("dict", str), True),
    "module_versions": (("list", ("dict", str)), True),
    "argv0": (str, False),
    "module": (str, False),
}
_SESSION: dict[str, tuple[Kind, bool]] = {
    "version": (int, True),
    "name": (str, True),
    "saved": (_NUMBER, True),
    "source": (str, True),
    "checkpoint": (int, True),
    "checkpoints": (int, True),
    "size": (int, False),
    "python": (str, False),
    "forkpoint": (str, False),
    "uid": (int, False),
    "tree": (("list", _ENTRY), False),
    "script": ((_SCRIPT, None), False),
    "secret": (_HEX, False),
    "images": (("dict", "image"), False),
    "kept": (("list", int), False),
    "needs": (("dict", "need"), False),
    "criu": (str, False),
}
_ROLES = ("INTERPRETER", "MAPPED", "OPEN", "FOLDER")  # persist.needs.Role's names
_IMAGE = re.compile(r"\d+/(?!\.+$)[A-Za-z0-9_.-]+")  # images/ID/FILE: no .., no path out
_LATEST = 4102444800  # 2100-01-01: a later save time is no save time


def check_meta(meta: object) -> None:
    """Raise ValueError naming the first field that is missing or of the wrong kind, or a
    reference that points at nothing (a kept checkpoint not in the tree)."""
    _check(meta, _SESSION, "meta.json")
    assert isinstance(meta, dict)
    ids = [entry["id"] for entry in meta.get("tree", [])]
    if len(set(ids)) != len(ids):
        raise ValueError("tree lists a checkpoint twice")
    for kept in meta.get("kept", []):
        if kept not in ids:
            raise ValueError(f"kept names checkpoint {kept}, which is not in the tree")
    for file in meta.get("images", {}):
        if not _IMAGE.fullmatch(file):  # never a path out of the session: ../../etc/shadow
            raise ValueError(f"images names {file[:60]!r}, which is no image file of a checkpoint")
    if meta.get("kept") and meta["checkpoint"] not in meta["kept"]:
        raise ValueError(f"checkpoint {meta['checkpoint']} is not among the kept ones")


def _check(value: object, kind: Kind, where: str) -> None:
    if not _fits(value, kind, where):
        raise ValueError(f"{where} is {_described(value)}, not {_named(kind)}")


def _fits(value: object, kind: Kind, where: str) -> bool:
    if isinstance(kind, tuple) and kind and kind[0] in ("list", "dict"):
        if kind[0] == "list":
            if not isinstance(value, list):
                return False
            for i, item in enumerate(value):
                _check(item, kind[1], f"{where}[{i}]")
            return True
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return False
        for key, item in value.items():
            _check(item, kind[1], f"{where}[{key!r}]")
        return True
    if isinstance(kind, tuple):
        others = [k for k in kind if k is not None]
        if value is None:
            return len(others) < len(kind)
        if len(others) == 1:  # a kind or null: the kind's own error says more
            return _fits(value, others[0], where)
        return any(_fits_quietly(value, k, where) for k in others)
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            return False
        for name, (sub, required) in kind.items():
            if name in value:
                _check(value[name], sub, f"{where}.{name}")
            elif required:
                raise ValueError(f"{where} has no {name}")
        return True
    if kind is None:
        return value is None
    if kind == _NUMBER:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return math.isfinite(value) and 0 <= value < _LATEST
    if kind == _HEX:
        return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{0,128}", value) is not None
    if kind == "image":  # [size, hash or None] or, for a parent link, [-1, "../ID"]
        return (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], int)
            and not isinstance(value[0], bool)
            and value[0] >= -1
            and (value[1] is None or isinstance(value[1], str))
        )
    if kind == "need":  # [role, size, mtime_ns, hash or ""] (persist.needs.record)
        return (
            isinstance(value, list)
            and len(value) == 4
            and value[0] in _ROLES
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:3])
            and isinstance(value[3], str)
        )
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _fits_quietly(value: object, kind: Kind, where: str) -> bool:
    try:
        return _fits(value, kind, where)
    except ValueError:
        return False


def _described(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def _named(kind: Kind) -> str:
    if isinstance(kind, tuple) and kind and kind[0] in ("list", "dict"):
        return f"a {kind[0]}"
    if isinstance(kind, tuple):
        return " or ".join(_named(k) for k in kind)
    if isinstance(kind, dict):
        return "an object"
    if kind is None:
        return "null"
    if isinstance(kind, str):
        return {
            "number": "a time",
            "hex": "a hex string",
            "image": "[size, hash]",
            "need": "[role, size, mtime, hash]",
        }[kind]
    return {"int": "an int"}.get(kind.__name__, f"a {kind.__name__}")
