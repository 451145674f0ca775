"""``forkpoint import FILE [NAME]``: check a session archive (``persist.archive``) and add
its session to the store.

Nothing in the file is trusted. Each member must be a regular file or a parent link
(``images/ID/parent`` -> ``../ID``) under a name a session holds, as its meta.json lists it;
each file is hashed as it is written and compared with meta.json's hash; meta.json is checked
field by field; the session must have been saved by this user, Python and forkpoint. No
member is extracted by tarfile: each is written here, at a path made from its checked name.
The session is built hidden in the store and renamed into place as a save is, so an import
that fails or is killed leaves nothing (the next forkpoint command sweeps a killed one's).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import xxhash

from forkpoint import __version__
from forkpoint.errors import ForkpointError
from forkpoint.persist import store
from forkpoint.persist.archive import CHUNK, FORMAT, VERSION, ZSTD_MAGIC, Progress
from forkpoint.persist.tar_stream import Members, ReadAhead
from forkpoint.units import human_bytes

__all__ = ["Imported", "import_"]

_META_MAX = 64 << 20  # manifest.json and meta.json are read whole: no more than this
_FILE = re.compile(r"images/(\d+)/((?!\.+$)[A-Za-z0-9_.-]+)")
_DIR = re.compile(r"images(/\d+)?/?")


@dataclass(frozen=True)
class Imported:
    name: str
    source: str  # "shell", or "run SCRIPT": what restores it (restore, or resume)
    checkpoints: int
    size: int
    seconds: float


def import_(file: str, name: str | None = None, progress: Progress | None = None) -> Imported:
    """Check the archive ``file`` (``-``: standard input) and add its session to the store, as
    ``name`` (default: the name it was saved under). Never replaces a session."""
    started = time.monotonic()
    if file == "-" and os.isatty(0):
        raise ForkpointError("import - reads an archive from standard input, which is a terminal here.")
    try:
        raw = os.fdopen(0, "rb", closefd=False) if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ForkpointError(f"cannot read {file}: {exc.strerror or exc}.") from None
    with raw:
        info = os.fstat(raw.fileno())
        total = info.st_size if stat.S_ISREG(info.st_mode) else 0  # a pipe's is not known
        counted = _Counted(raw)
        stream = cast(IO[bytes], counted)  # read() is all that reads it
        garbled: tuple[type[Exception], ...] = ()  # the decompressor's error on a damaged stream
        if raw.peek(4)[:4] == ZSTD_MAGIC:
            import zstandard

            stream = zstandard.ZstdDecompressor().stream_reader(
                stream, read_across_frames=True, closefd=False
            )
            garbled = (zstandard.ZstdError,)
        ahead = ReadAhead(stream, CHUNK)
        try:
            return _unpack(file, Members(ahead), name, lambda: counted.read_so_far, total, progress, started)
        except _InputError as exc:
            raise ForkpointError(f"cannot read {file}: {exc}.") from None
        except garbled as exc:
            raise ForkpointError(f"{file} is damaged: its zstd stream cannot be read ({exc}).") from None
        except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
            raise ForkpointError(
                f"{file} is not a forkpoint session archive, or is cut short ({exc})."
            ) from None
        except OSError as exc:
            raise ForkpointError(f"could not write the session into the store: {exc.strerror}.") from None
        finally:
            ahead.close()


class _Counted:
    """A file's ``read``, counting the bytes read (a pipe has no position to ask)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.read_so_far = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as exc:  # not the store's: told apart from a failed write
            raise _InputError(exc.strerror or str(exc)) from None
        self.read_so_far += len(data)
        return data


class _InputError(Exception):
    """The archive could not be read (an I/O error, a connection reset)."""


def _unpack(
    file: str,
    tar: Members,
    name: str | None,
    position: Callable[[], int],
    total: int,
    progress: Progress | None,
    started: float,
) -> Imported:
    members = iter(tar)
    manifest = _json_member(file, tar, next(members, None), "manifest.json")
    _check_manifest(file, manifest)
    meta_bytes, meta = _meta_member(file, tar, next(members, None))
    if xxhash.xxh3_128_hexdigest(meta_bytes) != manifest.get("meta"):
        raise ForkpointError(f"{file} is damaged: its meta.json is not what was saved.")
    try:
        session = store.session_from_meta(meta)
    except (ValueError, KeyError, TypeError) as exc:
        raise ForkpointError(f"{file} is damaged: its meta.json cannot be read ({exc}).") from None
    _check_session(file, meta, session)
    name = store.check_name(name if name is not None else session.name)
    with store.one_writer(name):
        if store.exists(name):
            raise ForkpointError(
                f"a session named {name!r} is already in the store; it is left as it is.",
                f"import it under another name: forkpoint import {file} NEWNAME",
            )
        needed = sum(max(size, 0) for size, _ in session.images.values())
        free = shutil.disk_usage(store.sessions_dir()).free
        if needed > free:  # before writing, not at ENOSPC: others use that disk too
            raise ForkpointError(
                f"the session in {file} takes {human_bytes(needed)}, and the store's disk has "
                f"{human_bytes(free)} free; nothing was written."
            )
        _build(file, tar, members, name, meta_bytes, dict(session.images), position, total, progress)
    size = store.size_of(store.sessions_dir() / name)
    return Imported(name, session.source, len(session.kept), size, time.monotonic() - started)


def _build(
    file: str,
    tar: Members,
    members: Iterator[tarfile.TarInfo],
    name: str,
    meta_bytes: bytes,
    expected: dict[str, list[Any]],
    position: Callable[[], int],
    total: int,
    progress: Progress | None,
) -> None:
    """The session ``name`` from the rest of the archive: every image meta.json lists, and
    nothing else, each hashed as it is written."""
    told = 0.0
    with store.build(name, replace=False) as folder:
        (folder / "meta.json").write_bytes(meta_bytes)
        (folder / "meta.json").chmod(0o600)
        for member in members:
            if _DIR.fullmatch(member.name) and member.isdir():
                continue
            path = _image_path(file, member)
            entry = expected.pop(path, None)
            if entry is None:
                raise ForkpointError(
                    f"{file} is damaged: it holds images/{path} twice, or one meta.json does not list."
                )
            target = folder / "images" / path
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if member.issym():
                if entry != [store.LINK, member.linkname] or not re.fullmatch(r"\.\./\d+", member.linkname):
                    raise ForkpointError(
                        f"{file} is damaged: images/{path} is a link meta.json does not list."
                    )
                os.symlink(member.linkname, target)
                continue
            if entry[0] != member.size:
                raise ForkpointError(f"{file} is damaged: images/{path} is not the size meta.json says.")
            _write_member(file, tar, member, target, entry[1])
            now = time.monotonic()
            if progress is not None and now - told >= 0.2:
                told = now
                progress(position(), total)
        if expected:
            raise ForkpointError(f"{file} is cut short: images/{min(expected)} is missing.")


def _json_member(file: str, tar: Members, member: tarfile.TarInfo | None, name: str) -> Any:
    if member is None or member.name != name or not member.isfile() or member.size > _META_MAX:
        raise ForkpointError(f"{file} is not a forkpoint session archive (it does not begin with {name}).")
    try:
        return json.loads(_whole(tar, member))
    except (ValueError, RecursionError):
        raise ForkpointError(f"{file} is damaged: its {name} is not JSON.") from None


def _meta_member(file: str, tar: Members, member: tarfile.TarInfo | None) -> tuple[bytes, Any]:
    if member is None or member.name != "meta.json" or not member.isfile() or member.size > _META_MAX:
        raise ForkpointError(f"{file} is damaged: meta.json does not follow its manifest.")
    raw = _whole(tar, member)
    try:
        return raw, json.loads(raw)
    except (ValueError, RecursionError):
        raise ForkpointError(f"{file} is damaged: its meta.json is not JSON.") from None


def _whole(tar: Members, member: tarfile.TarInfo) -> bytes:
    data = bytearray(member.size)
    tar.readinto(memoryview(data))
    return bytes(data)


def _check_manifest(file: str, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ForkpointError(f"{file} is not a forkpoint session archive (its manifest says otherwise).")
    if manifest.get("version") != VERSION:
        raise ForkpointError(
            f"{file} is a session archive of format {manifest.get('version')!r}; this forkpoint reads "
            f"format {VERSION} only."
        )


def _check_session(file: str, meta: dict[str, Any], session: store.Session) -> None:
    for field in ("python", "forkpoint", "uid", "secret"):  # optional in a store's old sessions only
        if field not in meta:
            raise ForkpointError(f"{file} is damaged: its meta.json has no {field}.")
    here = sys.version.split()[0]
    if session.python != here or session.forkpoint != __version__:
        raise ForkpointError(
            f"{file} was saved by Python {session.python[:20]!r} and forkpoint {session.forkpoint[:20]!r}; "
            f"this is Python {here} and forkpoint {__version__}.",
            "import and restore it where those are the versions",
        )
    if session.uid != os.getuid():
        raise ForkpointError(
            f"{file} was saved by uid {session.uid}, and its processes run as that user; you are uid "
            f"{os.getuid()}.",
            "import it as that user",
        )


def _image_path(file: str, member: tarfile.TarInfo) -> str:
    found = _FILE.fullmatch(member.name)
    if found is None or not (member.isfile() or member.issym()):
        kind = (
            "file"
            if member.isfile()
            else "folder"
            if member.isdir()
            else "link"
            if member.issym() or member.islnk()
            else "special file"
        )
        raise ForkpointError(
            f"{file} is not a session archive forkpoint can import: it holds {member.name[:80]!r}, a {kind} "
            "no session has."
        )
    return f"{found.group(1)}/{found.group(2)}"


def _write_member(file: str, tar: Members, member: tarfile.TarInfo, target: Path, digest: Any) -> None:
    hashed = xxhash.xxh3_128()
    buffer = memoryview(bytearray(CHUNK))
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb", buffering=0) as out:
        while n := tar.readinto(buffer):
            hashed.update(buffer[:n])
            at = 0
            while at < n:  # a write(2) may write less (a nearly full disk): the rest, or ENOSPC
                written = out.write(buffer[at:n])
                if not written:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                at += written
    if not isinstance(digest, str) or not digest.startswith("xxh3:") or hashed.hexdigest() != digest[5:]:
        raise ForkpointError(
            f"{file} is damaged: images/{member.name[len('images/') :]} is not what was saved (its content "
            "changed)."
        )
