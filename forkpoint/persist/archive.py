"""A session as one file, to move it to another machine: ``forkpoint export NAME [FILE]``
writes it (here), ``forkpoint import FILE [NAME]`` checks it and adds it to the store
(``persist.unpack``).

The file is a POSIX tar: ``manifest.json`` first (what the session is, who saved it with
which versions, and what it needs of a machine: the interpreter, the libraries and files it
had mapped or open, with sizes and hashes), then ``meta.json``, then the images, oldest
checkpoint first. The whole stream is compressed with zstd when a sample of the pages says
it pays: a Python heap shrinks about 6x, an array of random floats not at all, and there
zstd only costs time. ``tar -tf`` (or ``tar --zstd -tf``) lists it.

An export writes an unnamed file (O_TMPFILE) that gets its name only once complete, so an
export that fails, or is killed even with SIGKILL, leaves no part of a file behind (on file
systems with O_TMPFILE: tmpfs, ext4, xfs, btrfs; elsewhere the next export to the same file
removes what a killed one left).
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import xxhash

from forkpoint import leftovers
from forkpoint.errors import ForkpointError
from forkpoint.persist import store

__all__ = ["CHUNK", "FORMAT", "VERSION", "ZSTD_MAGIC", "Exported", "Progress", "export"]

FORMAT = "forkpoint session"
VERSION = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 4 << 20

Progress = Callable[[int, int], None]  # bytes done, of about this many


@dataclass(frozen=True)
class Exported:
    name: str
    file: str
    size: int  # of the file
    session: int  # bytes of the session's images
    compressed: bool
    seconds: float


# ----------------------------------------------------------------------------- export


def export(name: str, file: str | None, progress: Progress | None = None) -> Exported:
    """Write session ``name`` to ``file`` (default ``./NAME.forkpoint``; ``-``: standard
    output, for a pipe to another machine), replacing it."""
    started = time.monotonic()
    if file == "-" and os.isatty(1):
        raise ForkpointError(
            "an archive is binary: it is not written to a terminal.", "give a FILE, or pipe it"
        )
    target = Path(file if file is not None else f"{name}.forkpoint")
    if file != "-" and target.is_dir():
        target = target / f"{name}.forkpoint"
    folder = store.sessions_dir() / store.check_name(name)
    # held before it is read, so that no rm of it and no save over it comes between
    held = leftovers.share(folder) if folder.is_dir() and not folder.is_symlink() else None
    if held is None and folder.is_dir() and not folder.is_symlink():
        raise ForkpointError(f"session {name!r} is being removed or replaced; try again when that is done.")
    try:
        session, folder = store.load(name)
        files = [(path, entry) for path, entry in session.images.items()]
        total = sum(max(size, 0) for _, (size, _) in files)
        compress = _pays(folder / "images", files)
        with _destination(file, target) as out:
            sink: BinaryIO = out
            if compress:
                import zstandard

                # zstd's own threads, one per core: 1.8 s for 1 GiB of arange here, 3.4 s on one
                sink = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(out, closefd=False)
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # a class attribute stubs omit
                mtime = int(session.saved)
                meta = (folder / "meta.json").read_bytes()
                _add_bytes(tar, "manifest.json", _manifest(session, meta, total, compress), mtime)
                _add_bytes(tar, "meta.json", meta, mtime)
                done = [0]
                for path, (size, digest) in sorted(files, key=lambda f: _order(f[0])):
                    _add_image(tar, name, folder / "images", path, size, digest, mtime, done, total, progress)
            if compress:
                sink.close()
            size = out.tell()
    except OSError as exc:
        raise ForkpointError(f"could not write {target}: {exc.strerror or exc}.") from None
    finally:
        if held is not None:
            os.close(held)
    return Exported(name, str(target), size, total, compress, time.monotonic() - started)


def _order(path: str) -> tuple[int, str]:
    head, _, rest = path.partition("/")
    return int(head) if head.isdigit() else -1, rest


def _manifest(session: store.Session, meta: bytes, total: int, compressed: bool) -> bytes:
    """What the archive is and what it needs of a machine, readable without unpacking it
    (``tar -xOf FILE manifest.json``); meta.json, whose copy of this is the one a restore
    uses, follows it, and its hash is here (meta.json holds the hashes of the images)."""
    roles: dict[str, dict[str, list[Any]]] = {}
    for path, (role, size, _, digest) in sorted(session.needs.items()):
        roles.setdefault(role.lower(), {})[path] = [size, digest]
    return json.dumps(
        {
            "format": FORMAT,
            "version": VERSION,
            "session": session.name,
            "source": session.source,
            "saved": session.saved,
            "checkpoints": len(session.kept),
            "bytes": total,
            "meta": xxhash.xxh3_128_hexdigest(meta),
            "compressed": "zstd" if compressed else "none",
            "forkpoint": session.forkpoint,
            "python": session.python,
            "criu": session.criu,
            "uid": session.uid,
            "needs": roles,
        },
        indent=1,
    ).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = _info(name, len(data), mtime)
    tar.addfile(info, io.BytesIO(data))


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, mtime
    return info


def _add_image(
    tar: tarfile.TarFile,
    name: str,
    images: Path,
    path: str,
    size: int,
    digest: str | None,
    mtime: int,
    done: list[int],
    total: int,
    progress: Progress | None,
) -> None:
    if size == store.LINK:
        info = tarfile.TarInfo(f"images/{path}")
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, str(digest), 0o777, mtime
        tar.addfile(info)
        return
    source = images / path
    try:
        f = open(source, "rb")  # noqa: SIM115 - closed below; its errors are the session's, not the target's
    except OSError as exc:
        raise ForkpointError(
            f"session {name!r} is damaged: images/{path} cannot be read ({exc.strerror})."
        ) from None
    with f:
        if os.fstat(f.fileno()).st_size != size:
            raise ForkpointError(f"session {name!r} is damaged: images/{path} was truncated or changed.")
        reader = _Hashing(f, done, total, progress, f"session {name!r} is damaged: images/{path}")
        tar.addfile(_info(f"images/{path}", size, mtime), reader)
    if not reader.same_as(digest):
        raise ForkpointError(store.damaged(name, images, source))


def _pays(images: Path, files: list[tuple[str, list[Any]]]) -> bool:
    """Whether zstd shrinks the pages by a fifth or more, judged on up to 16 MiB of samples
    spread over them (compressing that costs about 30 ms)."""
    import zstandard

    pages = [(images / path, size) for path, (size, _) in files if "/pages-" in path and size > 0]
    total = sum(size for _, size in pages)
    if total == 0:
        return True  # small images only: compressing them costs nothing
    step = max(total // 16, 1 << 20)
    raw = packed = 0
    compressor = zstandard.ZstdCompressor(level=3)
    at = 0
    for path, size in pages:
        with open(path, "rb") as f:
            for offset in range(-at % step, size, step):
                f.seek(offset)
                sample = f.read(1 << 20)
                raw += len(sample)
                packed += len(compressor.compress(sample))
        at += size
    return raw > 0 and packed < 0.8 * raw


class _Hashing(io.RawIOBase):
    """A file read by tarfile, hashed and counted on the way."""

    def __init__(
        self, f: IO[bytes], done: list[int], total: int, progress: Progress | None, what: str
    ) -> None:
        self._f, self._done, self._total, self._progress, self._what = f, done, total, progress, what
        self._digest = xxhash.xxh3_128()
        self._told = 0.0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as exc:
            raise ForkpointError(f"{self._what} cannot be read ({exc.strerror}).") from None
        self._digest.update(data)
        self._done[0] += len(data)
        now = time.monotonic()
        if self._progress is not None and now - self._told >= 0.2:
            self._told = now
            self._progress(self._done[0], self._total)
        return data

    def same_as(self, digest: str | None) -> bool:
        if not isinstance(digest, str) or not digest.startswith("xxh3:"):
            return digest is None
        return self._digest.hexdigest() == digest[len("xxh3:") :]


@contextlib.contextmanager
def _new_file(target: Path) -> Iterator[BinaryIO]:
    """A file that appears at ``target`` (replacing what is there) only once the block
    succeeds: written unnamed (O_TMPFILE), so not even a SIGKILL leaves part of it; where the
    file system has no O_TMPFILE, written under a hidden name removed if the block fails (a
    SIGKILL leaves that one, for the next export to the same file to remove)."""
    folder = target.parent if str(target.parent) else Path(".")
    _sweep_partials(folder, target.name)
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600)
        temp: Path | None = None
    except OSError:
        temp = folder / f".{target.name}.partial-{os.getpid()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=CHUNK) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
            if temp is None:
                temp = folder / f".{target.name}.partial-{os.getpid()}"
                _name(out.fileno(), temp)
            temp.rename(target)
            temp = None
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _sweep_partials(folder: Path, name: str) -> None:
    """Remove the hidden partial files of this target that killed exports left (on a file
    system without O_TMPFILE, or killed between naming the file and renaming it): those whose
    pid is gone or is this one's. A live pid keeps its file, whoever holds the pid now."""
    for stale in folder.glob(f".{glob.escape(name)}.partial-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if pid.isdigit() and (int(pid) == os.getpid() or not os.path.exists(f"/proc/{pid}")):
            with contextlib.suppress(OSError):  # another export's sweep was first, or not ours
                stale.unlink()


def _destination(file: str | None, target: Path) -> contextlib.AbstractContextManager[BinaryIO]:
    """Where the archive goes: a new file put in place when whole; standard output; or, for a
    target that is there and is no regular file (/dev/null, a FIFO, /dev/fd/N), that file
    itself, written into: a rename would replace the device or the pipe with a file."""
    if file == "-":
        return _stdout()
    if target.exists() and not target.is_file():
        return _counted(open(target, "wb", buffering=CHUNK))  # noqa: SIM115 - closed by _counted
    return _new_file(target)


@contextlib.contextmanager
def _counted(out: BinaryIO) -> Iterator[BinaryIO]:
    with out:
        yield cast(BinaryIO, _Counting(out))
        out.flush()


@contextlib.contextmanager
def _stdout() -> Iterator[BinaryIO]:
    """Standard output as the archive (a pipe: no position to tell, so written bytes are counted)."""
    with os.fdopen(1, "wb", buffering=CHUNK, closefd=False) as out:
        counted = _Counting(out)
        yield cast(BinaryIO, counted)
        out.flush()


class _Counting:
    """``write`` to a file, and ``tell`` how much was written."""

    def __init__(self, out: BinaryIO) -> None:
        self._out, self._written = out, 0

    def write(self, data: bytes) -> int:
        n = self._out.write(data)
        self._written += n
        return n

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        self._out.flush()


def _name(fd: int, path: Path) -> None:
    """Give the unnamed file ``fd`` the name ``path``: linkat with AT_SYMLINK_FOLLOW on its
    /proc link (os.link calls link(2), which does not follow it, unless given a dir fd)."""
    procfd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(str(fd), path, src_dir_fd=procfd, follow_symlinks=True)
    finally:
        os.close(procfd)
