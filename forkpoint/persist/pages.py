"""Pages shared on disk between the saved checkpoints of one session.

CRIU dumps each checkpoint whole. Checkpoints of one run are forks of one another, so most of
their memory is the same; storing each whole would make a script session of ten checkpoints of a
1 GB process take 10 GB. CRIU's own incremental dumps find unchanged pages with soft-dirty
tracking, which this kernel lacks, so forkpoint does the same thing after the fact, in CRIU's
own image format: each checkpoint after the first is compared, page by page at the same address,
with the one dumped before it; pages found equal are marked ``PE_PARENT`` in its pagemap and
dropped from its pages file, and a ``parent`` link points CRIU's restore at the earlier images,
exactly as ``criu dump --prev-images-dir`` would have left them.

The image format (CRIU's ``criu/include/image.h`` and ``images/pagemap.proto``): two magics,
then entries, each a little-endian u32 size and a protobuf message; a pagemap holds a
``pagemap_head`` (which ``pages-N.img`` holds the data), then ``pagemap_entry`` runs
(vaddr, nr_pages, flags). The data of the present runs lies back to back in the pages file.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Index", "PARENT_LINK", "chain_index", "mark_lazy", "share", "share_or_index"]

PAGE = 4096
PE_PARENT, PE_LAZY, PE_PRESENT = 1, 2, 4
PARENT_LINK = "parent"
CHUNK = 8192  # pages compared at a time (32 MiB)
_SIZE = struct.Struct("<I")


@dataclass
class Pagemap:
    magic: bytes
    pages_id: int
    entries: list[tuple[int, int, int]]  # vaddr, nr_pages, flags


@dataclass
class Index:
    """Where each page of one task's dumped memory lies: page address -> (file, offset),
    following ``PE_PARENT`` runs into the earlier images."""

    vaddrs: Any  # sorted numpy uint64 page addresses
    which: Any  # index into files, per page
    offsets: Any  # byte offset in that file, per page
    files: list[Path] = field(default_factory=list)


# CRIU's mm image: VMA flags (mmap's) and status bits (criu/include/image.h)
_MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_LOCKED = 0x02, 0x20, 0x2000
_VMA_AREA_VSYSCALL, _VMA_AREA_VDSO = 1 << 2, 1 << 3


def _one(path: Path, message: Any) -> Any:
    """The single entry of an image such as mm-N.img or core-N.img."""
    raw = path.read_bytes()
    (size,) = _SIZE.unpack_from(raw, 8)
    return message.FromString(raw[12 : 12 + size])


def mark_lazy(images: Path) -> None:
    """Mark pages lazy (restored on first touch by a lazy restore) as CRIU means to.

    CRIU 4.1.1 leaves out of lazy restore the page that holds a thread's stack pointer, but
    its test (``is_stack()``, masking with ``~PAGE_MASK``) is true for every page when the
    stack pointer happens to be page-aligned; a forkpoint candidate waits at the same depth
    each time, so for one Python version none of its pages was ever lazy. This sets
    ``PE_LAZY`` on the present runs of private anonymous mappings, keeping the stack
    pointer's page and the one below eager, as the test meant."""
    from pycriu.images import core_pb2, mm_pb2  # type: ignore[import-untyped]

    for path in task_pagemaps(images):
        pid = path.name[8:-4]
        mm = _one(images / f"mm-{pid}.img", mm_pb2.mm_entry)
        sp = _one(images / f"core-{pid}.img", core_pb2.core_entry).thread_info.gpregs.sp
        stack = (sp & ~(PAGE - 1)) - PAGE, (sp & ~(PAGE - 1)) + PAGE
        lazy = sorted(
            (v.start, v.end)
            for v in mm.vmas
            if v.flags & (_MAP_PRIVATE | _MAP_ANONYMOUS) == _MAP_PRIVATE | _MAP_ANONYMOUS
            and not v.flags & _MAP_LOCKED
            and not v.status & (_VMA_AREA_VSYSCALL | _VMA_AREA_VDSO)
        )
        pagemap = read_pagemap(path)
        entries = []
        for vaddr, nr, flags in pagemap.entries:
            if flags & (PE_PARENT | PE_LAZY) or not flags & PE_PRESENT:
                entries.append((vaddr, nr, flags))
                continue
            end = vaddr + nr * PAGE
            cuts = {vaddr, end} | {x for area in (*lazy, stack) for x in area if vaddr < x < end}
            for a, b in itertools.pairwise(sorted(cuts)):
                can = not stack[0] <= a < stack[1] and _within(lazy, a)
                entries.append((a, (b - a) // PAGE, flags | (PE_LAZY if can else 0)))
        write_pagemap(path, Pagemap(pagemap.magic, pagemap.pages_id, _merge(entries)))


def _within(areas: list[tuple[int, int]], address: int) -> bool:
    """Whether ``address`` lies in one of the sorted, disjoint ``areas``."""
    at = bisect.bisect_right(areas, (address, 1 << 64)) - 1
    return at >= 0 and address < areas[at][1]


def _messages() -> tuple[Any, Any]:
    from pycriu.images import pagemap_pb2

    return pagemap_pb2.pagemap_head, pagemap_pb2.pagemap_entry


def read_pagemap(path: Path) -> Pagemap:
    head_type, entry_type = _messages()
    raw = path.read_bytes()
    pos = 8
    items = []
    while pos < len(raw):
        (size,) = _SIZE.unpack_from(raw, pos)
        items.append(raw[pos + 4 : pos + 4 + size])
        pos += 4 + size
    if not items or pos != len(raw):
        raise ValueError(f"{path} is not a whole pagemap image")
    head = head_type.FromString(items[0])
    entries = []
    for item in items[1:]:
        entry = entry_type.FromString(item)
        flags = entry.flags if entry.HasField("flags") else (PE_PARENT if entry.in_parent else PE_PRESENT)
        entries.append((entry.vaddr, entry.nr_pages, flags))
    return Pagemap(raw[:8], head.pages_id, entries)


def write_pagemap(path: Path, pagemap: Pagemap) -> None:
    head_type, entry_type = _messages()
    parts = [pagemap.magic]
    for message in [head_type(pages_id=pagemap.pages_id)] + [
        entry_type(vaddr=v, nr_pages=n, flags=f) for v, n, f in pagemap.entries
    ]:
        data = message.SerializeToString()
        parts += [_SIZE.pack(len(data)), data]
    path.write_bytes(b"".join(parts))


def task_pagemaps(images: Path) -> list[Path]:
    """The pagemaps of the dumped tasks (shared memory has its own, left whole)."""
    return sorted(p for p in images.glob("pagemap-*.img") if p.name[8:-4].isdigit())


def index_of(images: Path, name: str, parent: Index | None) -> Index:
    """The index of one task's pages in ``images``, resolving parent runs through ``parent``."""
    import numpy as np

    pagemap = read_pagemap(images / name)
    own = images / f"pages-{pagemap.pages_id}.img"
    files = [own] + (parent.files if parent else [])
    vaddrs, which, offsets = [], [], []
    pos = 0
    for vaddr, nr, flags in pagemap.entries:
        pages = np.uint64(vaddr) + np.arange(nr, dtype=np.uint64) * np.uint64(PAGE)
        if flags & PE_PRESENT:
            vaddrs.append(pages)
            which.append(np.zeros(nr, dtype=np.int32))
            offsets.append(pos + np.arange(nr, dtype=np.int64) * PAGE)
            pos += nr * PAGE
        elif flags & PE_PARENT:
            if parent is None:
                raise ValueError(f"{images / name} refers to a parent it does not have")
            at = _lookup(parent, pages)
            if not bool((at >= 0).all()):
                raise ValueError(f"{images / name} refers to pages its parent lacks")
            vaddrs.append(pages)
            which.append(parent.which[at] + 1)
            offsets.append(parent.offsets[at])
    if not vaddrs:
        empty = np.zeros(0, dtype=np.uint64)
        return Index(empty, empty.astype(np.int32), empty.astype(np.int64), files)
    return Index(np.concatenate(vaddrs), np.concatenate(which), np.concatenate(offsets), files)


def _lookup(index: Index, pages: Any) -> Any:
    """Positions of ``pages`` in ``index`` (-1 where absent)."""
    import numpy as np

    at = np.searchsorted(index.vaddrs, pages)
    found = at < len(index.vaddrs)
    found[found] = index.vaddrs[at[found]] == pages[found]
    return np.where(found, at, -1)


def _equal_pages(mine: Any, parent: Index, maps: list[Any], pages: Any, first: int) -> Any:
    """Which of ``pages`` (rows ``first``... of ``mine``) hold what the parent holds there."""
    import numpy as np

    at = _lookup(parent, pages)
    equal = np.zeros(len(pages), dtype=bool)
    rows = mine[first : first + len(pages)]
    for k, source in enumerate(maps):
        mask = at >= 0
        mask[mask] = parent.which[at[mask]] == k
        if mask.any():
            theirs = source[parent.offsets[at[mask]] // PAGE]
            equal[mask] = (rows[mask] == theirs).all(axis=1)
    return equal


def _runs(equal: Any) -> Iterator[tuple[int, int, bool]]:
    """(start, length, value) runs of a boolean array."""
    import numpy as np

    if len(equal) == 0:
        return
    edges = np.flatnonzero(equal[1:] != equal[:-1]) + 1
    starts = [0, *edges.tolist()]
    ends = [*edges.tolist(), len(equal)]
    for start, end in zip(starts, ends, strict=True):
        yield start, end - start, bool(equal[start])


def chain_index(images: Path) -> dict[str, Index]:
    """The indexes of one checkpoint's images already in a session, through its parent links
    (a save of the session again shares the new dumps' pages with them)."""
    chain, seen = [images], {images.resolve()}
    while (link := chain[-1] / PARENT_LINK).is_symlink():
        parent = (chain[-1] / os.readlink(link)).resolve()
        if parent in seen:
            raise ValueError(f"{link} leads back to itself")
        seen.add(parent)
        chain.append(parent)
    indexes: dict[str, Index] = {}
    for folder in reversed(chain):
        indexes = {p.name: index_of(folder, p.name, indexes.get(p.name)) for p in task_pagemaps(folder)}
    return indexes


def share_or_index(images: Path, previous: tuple[Path, dict[str, Index]] | None) -> dict[str, Index]:
    """After a dump: share pages with the ``(images, indexes)`` dumped before it in the same
    session, if any; returns this dump's indexes, for the next one."""
    if previous is None:
        return {path.name: index_of(images, path.name, None) for path in task_pagemaps(images)}
    return share(images, *previous)[0]


def share(images: Path, parent_dir: Path, parents: dict[str, Index]) -> tuple[dict[str, Index], int]:
    """Make ``images`` read the pages it shares with ``parent_dir`` from there. ``parents`` is
    the parent's index per pagemap; returns this dump's, and the bytes it no longer stores."""
    saved, indexes = 0, {}
    for path in task_pagemaps(images):
        parent = parents.get(path.name)
        if parent is None or len(parent.vaddrs) == 0:
            indexes[path.name] = index_of(images, path.name, None)
            continue
        saved += _share_task(images, path, parent)
        indexes[path.name] = index_of(images, path.name, parent)
    link = images / PARENT_LINK
    os.symlink(os.path.relpath(parent_dir, images), link)
    return indexes, saved


def _share_task(images: Path, path: Path, parent: Index) -> int:
    import numpy as np

    pagemap = read_pagemap(path)
    pages_file = images / f"pages-{pagemap.pages_id}.img"
    if pages_file.stat().st_size == 0:
        return 0
    mine = _map(pages_file)
    maps = [_map(f) for f in parent.files]
    entries: list[tuple[int, int, int]] = []
    fresh = pages_file.with_name(pages_file.name + ".new")
    saved = 0
    row = 0
    with open(pages_file, "rb") as src, open(fresh, "wb") as dst:
        for vaddr, nr, flags in pagemap.entries:
            if not flags & PE_PRESENT:
                entries.append((vaddr, nr, flags))
                continue
            for first in range(0, nr, CHUNK):
                count = min(CHUNK, nr - first)
                start = vaddr + first * PAGE
                pages = np.uint64(start) + np.arange(count, dtype=np.uint64) * np.uint64(PAGE)
                equal = _equal_pages(mine, parent, maps, pages, row)
                for at, length, same in _runs(equal):
                    if same:
                        # never PE_LAZY: CRIU 4.1.1's lazy-pages daemon hangs reading a page
                        # through a parent link, so a lazy restore fills these up front
                        entries.append((start + at * PAGE, length, PE_PARENT))
                        saved += length * PAGE
                    else:
                        entries.append((start + at * PAGE, length, flags))
                        _copy(src, dst, (row + at) * PAGE, length * PAGE)
                row += count
    del mine, maps
    os.replace(fresh, pages_file)
    write_pagemap(path, Pagemap(pagemap.magic, pagemap.pages_id, _merge(entries)))
    return saved


def _map(path: Path) -> Any:
    """A pages file as rows of one page each (an empty file, fully shared, has none)."""
    import numpy as np

    if path.stat().st_size == 0:
        return np.zeros((0, PAGE // 8), dtype=np.uint64)
    return np.memmap(path, dtype=np.uint64, mode="r").reshape(-1, PAGE // 8)


def _copy(src: Any, dst: Any, offset: int, length: int) -> None:
    while length:
        done = os.copy_file_range(src.fileno(), dst.fileno(), length, offset)
        if done <= 0:
            raise OSError(f"could not copy pages from {src.name}")
        offset += done
        length -= done


MAX_RUN = 256  # pages per pagemap entry, as CRIU writes them: its lazy-pages daemon failed on
# one entry of 2 GB (512 MB passed; a length in an int, most likely)


def _merge(entries: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Join runs that touch and have the same flags (chunks split them), in entries of at
    most MAX_RUN pages."""
    merged: list[tuple[int, int, int]] = []
    for vaddr, nr, flags in entries:
        if merged:
            last_vaddr, last_nr, last_flags = merged[-1]
            if last_flags == flags and last_vaddr + last_nr * PAGE == vaddr:
                merged[-1] = (last_vaddr, last_nr + nr, flags)
                continue
        merged.append((vaddr, nr, flags))
    capped = []
    for vaddr, nr, flags in merged:
        for first in range(0, nr, MAX_RUN):
            capped.append((vaddr + first * PAGE, min(MAX_RUN, nr - first), flags))
    return capped
