"""What a saved session needs of the machine it is restored on: the files its processes had
mapped or open (the interpreter, its libraries, data files) and their working folders, at the
same paths and the same as when saved.

CRIU reopens each of them by path at restore, and fails deep inside when one is missing or of
another size ("File ... has bad size"); a library of the same size but another build would
be worse, its code under the restored process's saved pointers. So a save reads, from CRIU's
own images (the list of what it will reopen), each file's role and size, records its mtime
and content hash next to them, and a restore compares them with this machine before CRIU
runs, naming the first that differs in one sentence. A file whose size and mtime are as
recorded is taken as the same (as rsync does); one with another mtime is hashed again (on
another machine, after an import: a few tens of ms for numpy's libraries).
"""

from __future__ import annotations

import enum
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from forkpoint.errors import ForkpointError
from forkpoint.persist.store import content_hash

__all__ = ["Need", "Role", "check", "check_criu", "fingerprint", "needed", "record"]

_COMMON, _SERVICE = 0x54564319, 0x55105940  # CRIU's first magics: the image's own follows
UNSIZED = -1  # a file open for appending: CRIU records no size, it grows while the process runs
_FILE_MAPPED = (1 << 6) | (1 << 7)  # VMA_FILE_PRIVATE, VMA_FILE_SHARED


class Role(enum.Enum):
    """Why a process needs a file; the order is that of the sentence's interest."""

    INTERPRETER = "the interpreter it ran"
    MAPPED = "a file it had mapped"
    OPEN = "a file it had open"
    FOLDER = "a folder it had open or worked in"


@dataclass(frozen=True)
class Need:
    path: str
    role: Role
    size: int  # as CRIU saw it (a folder: 0); UNSIZED when CRIU does not check it


def needed(images: Path) -> dict[str, Need]:
    """What the processes dumped in ``images`` need, by path. Files whose content CRIU kept in
    the images (deleted while open: its "ghost" files) and devices are not needed."""
    ghosts = {e.orig_id for e in _entries(images / "remap-fpath.img", "remap_file_path_entry")}
    roles: dict[int, Role] = {}
    for mm in _each(images, "mm-", "mm_entry"):
        roles[mm.exe_file_id] = Role.INTERPRETER
        for vma in mm.vmas:
            if vma.status & _FILE_MAPPED and vma.shmid not in roles:
                roles[vma.shmid] = Role.MAPPED
    for fd in _each(images, "fdinfo-", "fdinfo_entry"):
        roles.setdefault(fd.id, Role.OPEN)
    found: dict[str, Need] = {}
    for entry in _entries(images / "files.img", "file_entry"):
        if not entry.HasField("reg") or entry.id in ghosts:
            continue
        reg = entry.reg
        mode = reg.mode if reg.HasField("mode") else stat.S_IFREG
        if stat.S_ISDIR(mode):
            role = Role.FOLDER
        elif stat.S_ISREG(mode) and entry.id in roles:
            role = roles[entry.id]
        else:
            continue  # a device (/dev/null), or a file no process of the dump holds
        old = found.get(reg.name)
        if old is None or list(Role).index(role) < list(Role).index(old.role):
            size = 0 if role is Role.FOLDER else reg.size if reg.HasField("size") else UNSIZED
            found[reg.name] = Need(reg.name, role, size)
    return found


def record(needs: dict[str, Need], before: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    """meta.json's table of ``needs``: path -> [role, size, mtime_ns, content hash]. The hash
    is taken from ``before`` (the last save's table) when size and mtime are the same, and
    is "" for a folder, or a file changed since it was opened (its size is not CRIU's)."""
    before = before or {}
    table: dict[str, list[Any]] = {}
    for path, need in needs.items():
        try:
            info = os.stat(path)
        except OSError:
            table[path] = [need.role.name, need.size, 0, ""]
            continue
        old = before.get(path)
        if need.role is Role.FOLDER or info.st_size != need.size:
            digest = ""  # a folder, a file appended to, or one changed since it was opened
        elif old is not None and old[1:3] == [need.size, info.st_mtime_ns] and old[3]:
            digest = old[3]
        else:
            try:
                digest = fingerprint(Path(path), need.size)
            except OSError:
                digest = ""  # unreadable now: its size is still checked

        table[path] = [need.role.name, need.size, info.st_mtime_ns, digest]
    return table


def check_criu(name: str, recorded: str, here: tuple[int, int]) -> None:
    """Refuse a restore with a CRIU older than the one that dumped the session: CRIU keeps
    reading the images of its earlier releases, and promises nothing for later ones, whose new
    image kinds and fields an older one may fail on half-way (a session made before versions were recorded has
    none, and is let through)."""
    try:
        saved = tuple(int(part) for part in recorded.split(".")[:2])
    except ValueError:
        saved = ()
    if len(saved) == 2 and saved > here:
        raise ForkpointError(
            f"session {name!r} was saved with CRIU {recorded}, and this machine has the older "
            f"{here[0]}.{here[1]}, which is not made to read a later CRIU's images.",
            f"restore it with CRIU {recorded} or newer (make install fetches 4.1 into the venv)",
        )


def check(name: str, images: Path, table: dict[str, list[Any]]) -> None:
    """Refuse, in one sentence, a restore of the checkpoint in ``images`` on a machine that
    lacks what it needs or has another version of it."""
    try:
        found = needed(images)
    except (ValueError, struct.error) as exc:  # an image that is not CRIU's: damaged or crafted
        raise ForkpointError(
            f"session {name!r} is damaged: the list of files in images/{images.name} cannot be read ({exc})."
        ) from None
    for path, need in sorted(found.items(), key=lambda item: list(Role).index(item[1].role)):
        problem = _differs(need, table.get(path))
        if problem:
            what = need.role.value
            if need.role is Role.MAPPED and ".so" in os.path.basename(path):
                what = "a library it had mapped"
            raise ForkpointError(
                f"session {name!r} cannot be restored on this machine: {what}, {path}, {problem}.",
                "restore it where the same files are at the same paths; docs/architecture.md says more",
            )


def _differs(need: Need, recorded: list[Any] | None) -> str:
    try:
        info = os.stat(need.path)
    except FileNotFoundError:
        return "is not here"
    except OSError as exc:
        return f"cannot be read here ({exc.strerror})"
    if need.role is Role.FOLDER:
        return "" if stat.S_ISDIR(info.st_mode) else "is not a folder here"
    if not stat.S_ISREG(info.st_mode):
        return "is not a file here"
    if need.size == UNSIZED:
        return ""  # appended to: any size will do, as for CRIU
    if info.st_size != need.size:
        return f"is {_size(info.st_size)} here, and was {_size(need.size)}"
    if recorded is None or recorded[1] != need.size or not recorded[3] or recorded[2] == info.st_mtime_ns:
        return ""
    try:
        same = fingerprint(Path(need.path), need.size) == recorded[3]
    except OSError as exc:
        return f"cannot be read here ({exc.strerror})"
    return "" if same else "has the same size here but other content"


_WHOLE = 256 << 20  # files up to this size are hashed whole
_SAMPLES = 64  # larger ones (a dataset the process has mapped) by this many 1 MiB samples


def fingerprint(path: Path, size: int) -> str:
    """The content hash of a file, or for one over 256 MiB the hash of 64 MiB of samples
    spread over it ("sampled:" in front): a 10 GB dataset held open would otherwise be read
    whole at every first save and every restore on another machine, to tell a file that
    almost always differs in size or in most of its blocks when it differs at all."""
    if size <= _WHOLE:
        return content_hash(path)
    digest = xxhash.xxh3_128()
    step = size // _SAMPLES
    with open(path, "rb") as f:
        for k in range(_SAMPLES):
            f.seek(k * step)
            digest.update(f.read(1 << 20))
    return "sampled:" + digest.hexdigest()


def _size(n: int) -> str:
    if n < 10_000:
        return f"{n} bytes"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _each(images: Path, prefix: str, message: str) -> Iterator[Any]:
    for path in sorted(images.glob(f"{prefix}*.img")):
        yield from _entries(path, message)


def _entries(path: Path, message: str) -> Iterator[Any]:
    """The entries of one CRIU image: after its magic, each a protobuf message behind its
    32-bit size. Read with pycriu's message classes (its dict layer fails on protobuf 7)."""
    from pycriu.images import fdinfo_pb2, mm_pb2, remap_file_path_pb2  # type: ignore[import-untyped]

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    modules = {"mm_entry": mm_pb2, "remap_file_path_entry": remap_file_path_pb2}
    cls = getattr(modules.get(message, fdinfo_pb2), message)
    (first,) = struct.unpack_from("<I", data, 0)
    at = 8 if first in (_COMMON, _SERVICE) else 4
    while at + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, at)
        entry = cls()
        try:
            entry.ParseFromString(data[at + 4 : at + 4 + size])
        except Exception as exc:  # protobuf's DecodeError, whose module is not imported here
            raise ValueError(f"{path.name} is not a CRIU image") from exc
        at += 4 + size
        yield entry
