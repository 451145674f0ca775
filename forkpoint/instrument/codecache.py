"""Compiled, rewritten code kept between runs, as python keeps ``__pycache__``.

The rewrite is an AST round trip: ``ast.parse`` builds the tree as Python objects and
``compile`` turns it back, about three times what python spends compiling the same source
(test_typing: 0.2 s of a 0.9 s run). Python never caches a ``__main__`` script, but a user runs
the same script again and again between edits, so the code is kept under the user's cache dir,
keyed by everything the rewrite reads: the source, its path, the sites, the Python version and
the rewriter's own source (an edited forkpoint never loads stale code).

An entry is the marshalled code behind a digest of it, in a 0700 dir of the user's own; one that
another user could have written, or whose digest does not match, is ignored, never loaded.
``PYTHONDONTWRITEBYTECODE`` does not turn it off: that keeps ``__pycache__`` out of source
trees (and Docker images set it), and this cache is never next to a source.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import sys
import types
from collections.abc import Callable
from pathlib import Path

from forkpoint.paths import cache_dir

__all__ = ["cached"]

_FORMAT = b"forkpoint-code-1"
_DIGEST = 32
_KEEP = 256  # entries; the oldest go when there are more
_fingerprint: bytes | None = None


def cached(
    kind: str, source: str, path: str, params: object, build: Callable[[], types.CodeType]
) -> types.CodeType:
    """The code ``build()`` makes of ``source`` at ``path``, from the cache when it is there.
    ``params`` must have a repr that is the same in every process (no sets of strings)."""
    key = hashlib.blake2b(digest_size=20)
    for part in (
        _FORMAT,
        _rewriter(),
        sys.version.encode(),
        bytes([sys.flags.optimize]),
        kind.encode(),
        path.encode(),
        repr(params).encode(),
    ):
        key.update(len(part).to_bytes(4, "little") + part)
    key.update(source.encode("utf-8", "surrogatepass"))
    folder = Path(cache_dir(), "code")
    entry = folder / key.hexdigest()
    code = _load(folder, entry)
    if code is None:
        code = build()
        _store(folder, entry, code)
    return code


def _rewriter() -> bytes:
    """A digest of the instrument package's source: what decides the rewritten code."""
    global _fingerprint
    if _fingerprint is None:
        digest = hashlib.blake2b(digest_size=16)
        for file in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(file.read_bytes())
        _fingerprint = digest.digest()
    return _fingerprint


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _load(folder: Path, entry: Path) -> types.CodeType | None:
    try:
        if not _private(folder.stat()):
            return None
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fp:
        if not _private(os.fstat(fd)):
            return None
        data = fp.read()
    digest, payload = data[:_DIGEST], data[_DIGEST:]
    if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != digest:
        return None
    try:
        code = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def _store(folder: Path, entry: Path, code: types.CodeType) -> None:
    """Written to a temporary name and renamed, so a reader sees a whole entry or none."""
    payload = marshal.dumps(code)
    temp = entry.with_name(f".{entry.name}.{os.getpid()}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fp:
            fp.write(hashlib.blake2b(payload, digest_size=_DIGEST).digest() + payload)
        os.replace(temp, entry)
        _prune(folder)
    except OSError:
        temp.unlink(missing_ok=True)  # a full or read-only disk costs the cache, not the run


def _prune(folder: Path) -> None:
    entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    if len(entries) <= _KEEP:
        return
    entries.sort(key=lambda e: e.stat().st_mtime)
    for old in entries[: len(entries) - _KEEP * 3 // 4]:
        Path(old.path).unlink(missing_ok=True)
