"""Questions about the user's namespace, answered inside the agent: completion and fingerprints.

Completion evaluates nothing but plain dotted names (no calls, no subscripts), so pressing
Tab never runs user code beyond attribute lookups. Fingerprints are computed in a throwaway
fork of a checkpoint, never in the checkpoint itself.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import re
import types
from typing import Any

__all__ = ["complete", "completion_token", "fingerprints"]

_TOKEN = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*\.?$|[A-Za-z_]?$")
_PREVIEW = 60


def completion_token(text: str) -> str:
    """The dotted name at the end of ``text`` that completion replaces."""
    match = _TOKEN.search(text)
    return match.group(0) if match else ""


def complete(text: str, ns: dict[str, Any]) -> list[str]:
    """Completions for the dotted name that ends ``text``, each the whole name."""
    token = completion_token(text)
    if "." not in token:
        names = set(ns) | set(dir(builtins)) | set(keyword.kwlist)
        return sorted(
            n for n in names if n.startswith(token) and (token.startswith("_") or not n.startswith("_"))
        )
    base, _, prefix = token.rpartition(".")
    parts = base.split(".")
    sentinel = object()
    obj = ns.get(parts[0], getattr(builtins, parts[0], sentinel))
    for part in parts[1:]:
        if obj is sentinel:
            break
        try:
            obj = getattr(obj, part, sentinel)
        except Exception:
            return []
    if obj is sentinel:
        return []
    try:
        attrs = dir(obj)
    except Exception:
        return []
    hide = not prefix.startswith("_")
    return sorted(f"{base}.{a}" for a in attrs if a.startswith(prefix) and not (hide and a.startswith("_")))


def fingerprints(ns: dict[str, Any]) -> dict[str, dict[str, str]]:
    """For each user name: type, a digest of the value, and a short preview."""
    out = {}
    for name, value in ns.items():
        if name.startswith("__"):
            continue
        out[name] = {"type": type(value).__qualname__, "digest": _digest(value), "preview": _preview(value)}
    return out


def _digest(value: object) -> str:
    h = hashlib.blake2b(digest_size=12)
    if isinstance(value, types.ModuleType):
        h.update(value.__name__.encode())
        return h.hexdigest()
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        view = None
    if view is not None and view.contiguous:
        h.update(f"{view.format}{view.shape}".encode())
        h.update(view.cast("B"))
    h.update(_safe_repr(value).encode())
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and not isinstance(value, (type, types.FunctionType)):
        h.update(_safe_repr(state).encode())
    return h.hexdigest()


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<repr failed: {type(exc).__name__}>"


def _preview(value: object) -> str:
    text = " ".join(_safe_repr(value).split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."
