"""Saved sessions on disk: ``$XDG_DATA_HOME/forkpoint/sessions/NAME/``.

A session dir holds ``meta.json`` (what was saved, by whom, with which Python and forkpoint,
the checkpoint tree and the sources) and ``images/`` (CRIU's). Dirs are 0700 and files 0600:
the images hold the whole process memory, secrets included. A session is built in a hidden
temp dir next to the others and renamed into place when complete, so a failed save (a full
disk, CRIU refusing) leaves nothing half-written and never harms an older session.
Nothing here is unpickled: meta.json is plain JSON, checked field by field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from forkpoint import __version__, leftovers, paths
from forkpoint.channel import private_dir
from forkpoint.errors import ForkpointError, Reason
from forkpoint.persist.meta_check import check_meta
from forkpoint.persist.pages import PARENT_LINK

__all__ = [
    "META_VERSION",
    "Session",
    "build",
    "check_images",
    "check_name",
    "manifest",
    "list_sessions",
    "one_writer",
    "load",
    "remove",
    "session_from_meta",
    "sessions_dir",
    "size_of",
    "write_meta",
    "write_private",
]

META_VERSION = 3  # 2: the saved tree has an init of its own; dumps share pages. 3: paths.attach_file
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Session:
    name: str
    saved: float  # seconds since the epoch
    source: str  # "shell", or "run SCRIPT"
    checkpoint: int  # the id it was saved at
    checkpoints: int  # how many checkpoints it holds
    size: int = 0  # bytes on disk
    python: str = field(default_factory=lambda: sys.version.split()[0])
    forkpoint: str = __version__
    uid: int = field(default_factory=os.getuid)
    tree: list[dict[str, Any]] = field(default_factory=list)  # the saved checkpoints' titles
    script: dict[str, Any] | None = None  # for `run`: path, argv and the sources that ran
    secret: str = ""  # what the restored process proves itself with to the new controller
    images: dict[str, list[Any]] = field(default_factory=dict)  # file -> [size, sha256 if small]
    kept: list[int] = field(default_factory=list)  # the checkpoints with images, images/ID/
    needs: dict[str, list[Any]] = field(default_factory=dict)  # what it needs of a machine: persist.needs
    criu: str = ""  # the version of CRIU that dumped it

    def meta(self) -> dict[str, Any]:
        return {"version": META_VERSION, **asdict(self)}


def sessions_dir() -> Path:
    return Path(private_dir(os.path.join(private_dir(paths.data_dir()), "sessions")))


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ForkpointError(
            f"{name!r} cannot name a session.", "use letters, digits, '.', '_' or '-', up to 64 characters"
        )
    return name


@contextlib.contextmanager
def one_writer(name: str) -> Iterator[None]:
    """One save or import of a name at a time, across forkpoints: two at once would each build
    it, and the second rename would replace the first. The lock is in the store, the one
    thing two forkpoints writing the same session share (not their runtime dirs, which
    $XDG_RUNTIME_DIR or $TMPDIR may set apart: two batch jobs of one user on a shared store)."""
    lock = sessions_dir() / f".{check_name(name)}.writer.lock"
    with _writer_lock(lock) as mine:
        if not mine:
            raise ForkpointError(
                f"session {name!r} is being saved or imported by another forkpoint; try again when it is "
                "done."
            )
        yield


@contextlib.contextmanager
def _writer_lock(lock: Path) -> Iterator[bool]:
    """The lock, or False once it has been held elsewhere for half a second: a save or import
    holds it for seconds, a sweep of one a killed forkpoint left for a moment."""
    deadline = time.monotonic() + 0.5
    while True:
        with leftovers.exclusive(lock, wait=False) as mine:
            if mine or time.monotonic() > deadline:
                yield mine
                return
        time.sleep(0.01)


@contextlib.contextmanager
def build(name: str, replace: bool = True) -> Iterator[Path]:
    """A private temp dir to fill; renamed to the session ``name`` when the block succeeds,
    removed when it fails (the older session of that name, if any, is kept until then; one
    is replaced only if ``replace``, and never while a forkpoint has it restored or is
    exporting it). Held by a lock while it is built, until it has its name, so the next
    forkpoint removes it if this one is killed (``leftovers``)."""
    root = sessions_dir()
    temp = root / f".{check_name(name)}.saving-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(mode=0o700)
    lock = leftovers.hold(temp)
    try:
        yield temp
        _fsync_tree(temp)
        final = root / name
        old = root / f".{name}.old-{os.getpid()}"
        if os.path.lexists(final):
            _put_aside(name, final, old, replace)
        temp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def _put_aside(name: str, final: Path, old: Path, replace: bool) -> None:
    """Move the session ``final`` out of the way of its replacement, or say why not."""
    if not replace:
        raise ForkpointError(
            f'there is a saved session named "{name}" already.', reason=Reason.SESSION_EXISTS
        )
    guard = leftovers.try_hold(final)
    if guard is None:
        raise ForkpointError(
            f"session {name!r} is in use (a forkpoint has it restored, or is exporting it); it was not "
            "replaced."
        )
    try:
        final.rename(old)
    finally:
        os.close(guard)


def write_meta(folder: Path, session: Session) -> None:
    path = folder / "meta.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(session.meta(), f, indent=1)


def write_private(path: Path, value: Any) -> None:
    """A 0600 JSON file, written whole or not at all."""
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    temp.rename(path)


LINK = -1  # the manifest's size for a parent link (see persist.pages); its target in place of a hash
_XXH3 = "xxh3:"  # a content hash's prefix; older sessions have SHA-256 of small files only


def manifest(images: Path, known: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    """Size and content hash (XXH3-128) of each image file: CRIU can hang on a truncated image
    instead of failing, and restores a flipped byte in a pages image silently, so a restore
    checks every file first. XXH3 reads at memory speed: the check costs the read of the
    images (0.23 s per GiB from the page cache here), which also warms the cache CRIU reads.
    ``known`` entries (of images carried from a session's last save, hashed when written)
    are taken as they are when the size agrees: a file damaged since fails the restore's check."""
    found: dict[str, list[Any]] = {}
    known = known or {}
    for path in sorted(images.rglob("*.img")):
        name, size = str(path.relative_to(images)), path.stat().st_size
        entry = known.get(name)
        found[name] = entry if entry is not None and entry[0] == size else [size, _XXH3 + content_hash(path)]
    for link in sorted(images.glob(f"*/{PARENT_LINK}")):
        found[str(link.relative_to(images))] = [LINK, os.readlink(link)]
    return found


def content_hash(path: Path) -> str:
    digest = xxhash.xxh3_128()
    chunk = bytearray(8 << 20)
    view = memoryview(chunk)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(chunk):
            digest.update(view[:n])
    return digest.hexdigest()


def check_images(
    name: str, images: Path, expected: dict[str, list[Any]], defer_pages: bool = False
) -> list[tuple[str, str]]:
    """Refuse a session whose images are not what was saved. With ``defer_pages`` the pages
    files' contents are not read here: returned as (path, hash) for a check behind a lazy
    restore (``verify``), whose point is to be ready before they are read."""
    deferred = []
    for file, (size, digest) in expected.items():
        path = images / file
        if not _inside(images, path):
            raise ForkpointError(f"session {name!r} is damaged: its meta.json names a file outside it.")
        if size == LINK:
            _check_link(name, images, file, digest)
            continue
        if path.is_symlink() or not path.is_file():
            raise ForkpointError(f"session {name!r} is damaged: images/{file} is missing.")
        if path.stat().st_size != size:
            raise ForkpointError(f"session {name!r} is damaged: images/{file} was truncated or changed.")
        if isinstance(digest, str) and digest.startswith(_XXH3):
            if defer_pages and path.name.startswith("pages-"):
                deferred.append((str(path), digest[len(_XXH3) :]))
                continue
            same = content_hash(path) == digest[len(_XXH3) :]
        else:
            same = digest is None or hashlib.sha256(path.read_bytes()).hexdigest() == digest
        if not same:
            raise ForkpointError(damaged(name, images, path))
    return deferred


def damaged(name: str, images: Path, path: Path) -> str:
    """The sentence for an image whose content is not what was saved."""
    file = path.relative_to(images)
    return f"session {name!r} is damaged: images/{file} is not what was saved (its content changed)."


def _inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` names something in ``folder`` (no ``..``, no absolute path)."""
    return os.path.normpath(path).startswith(os.path.join(os.path.normpath(folder), ""))


def _check_link(name: str, images: Path, file: str, target: str) -> None:
    """A checkpoint's link to the images it shares pages with: to a sibling, never out."""
    path = images / file
    sibling = re.fullmatch(r"\.\./(\d+)", target)
    if not path.is_symlink() or os.readlink(path) != target or sibling is None:
        raise ForkpointError(f"session {name!r} is damaged: images/{file} was changed.")
    if not (images / sibling.group(1)).is_dir():
        raise ForkpointError(f"session {name!r} is damaged: images/{sibling.group(1)} is missing.")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue  # a parent link (persist.pages) to a sibling dir synced on its own
        if path.is_file():
            path.chmod(0o600)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            path.chmod(0o700)


def size_of(folder: Path) -> int:
    """Bytes of the files under ``folder``, never following a link (a session's parent links
    point at its siblings; a link planted in the store could point at /)."""
    total = 0
    for root, _, files in os.walk(folder):  # os.walk does not descend into linked dirs
        for file in files:
            info = os.lstat(os.path.join(root, file))
            if not os.path.islink(os.path.join(root, file)):
                total += info.st_size
    return total


def load(name: str) -> tuple[Session, Path]:
    """A saved session and its dir, or one sentence on why it cannot be used."""
    folder = sessions_dir() / check_name(name)
    if folder.is_symlink():
        raise ForkpointError(
            f"{name!r} is not a session (a link in the store, which forkpoint never follows)."
        )
    if not folder.is_dir():
        known = ", ".join(s.name for s in list_sessions()) or "none"
        raise ForkpointError(f"there is no session named {name!r}.", f"saved sessions: {known}")
    owner = folder.stat().st_uid
    if owner != os.getuid():
        raise ForkpointError(f"session {name!r} belongs to uid {owner}, not to you.")
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if (
            isinstance(meta, dict)
            and isinstance(meta.get("version"), int)
            and meta["version"] != META_VERSION
        ):
            raise ForkpointError(
                f"session {name!r} was saved in format {meta['version']}; this forkpoint reads format "
                f"{META_VERSION} only.",
                "save it again with the forkpoint that made it",
            )
        session = session_from_meta(meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ForkpointError(f"session {name!r} is damaged: its meta.json cannot be read ({exc}).") from None
    here = sys.version.split()[0]
    if session.python != here or session.forkpoint != __version__:
        raise ForkpointError(
            f"session {name!r} was saved by Python {session.python} and forkpoint {session.forkpoint}; "
            f"this is Python {here} and forkpoint {__version__}.",
            "restore it with the same versions",
        )
    return session, folder


def session_from_meta(meta: Any) -> Session:
    """The session a meta.json's JSON describes; ValueError (or KeyError, TypeError) naming
    what is wrong with it."""
    if not isinstance(meta, dict) or meta.get("version") != META_VERSION:
        raise ValueError("not a forkpoint session of this format")
    check_meta(meta)  # every field, before any of it is used
    return Session(**{k: meta[k] for k in Session.__dataclass_fields__ if k in meta})


def list_sessions() -> list[Session]:
    """Every readable session, newest first; damaged ones are listed with what is known."""
    found = []
    for folder in sorted(sessions_dir().iterdir()):
        if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue  # a link is never followed: it is no session
        try:
            session = session_from_meta(json.loads((folder / "meta.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            session = Session(folder.name, folder.stat().st_mtime, "(damaged)", -1, 0)
        session.name = folder.name
        session.size = size_of(folder)
        found.append(session)
    return sorted(found, key=lambda s: s.saved, reverse=True)


def exists(name: str) -> bool:
    return os.path.lexists(sessions_dir() / check_name(name))


def free_name(name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... if taken: a save that must never replace one."""
    candidate, n = name, 1
    while exists(candidate):
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def remove(name: str) -> None:
    folder = sessions_dir() / check_name(name)
    if folder.is_symlink():
        raise ForkpointError(
            f"{name!r} is not a session (a link in the store, which forkpoint never follows)."
        )
    if not folder.is_dir():
        raise ForkpointError(f"there is no session named {name!r}.")
    owner = folder.stat().st_uid
    if owner != os.getuid():  # restore refuses it too: it is not this user's to delete
        raise ForkpointError(f"session {name!r} belongs to another user (uid {owner}); it is left as it is.")
    if leftovers.in_use(folder):
        raise ForkpointError(f"session {name!r} is in use: a forkpoint has it restored; quit that one first.")
    shutil.rmtree(folder)
