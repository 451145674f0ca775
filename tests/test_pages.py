"""Pages shared on disk between a session's checkpoints (forkpoint.persist.pages), on images
in CRIU's format built here: after sharing, every page of every dump reads back as it was
dumped, through any number of parent links, and pages equal to the parent's are not stored."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pycriu.images.pagemap_pb2")

from forkpoint.persist import pages  # noqa: E402

MAGIC = struct.pack("<II", 0x54564319, 0x56084025)  # IMG_COMMON, PAGEMAP
BASE = 0x7F0000000000

# a dump: page number -> content byte (a few values, so that pages often match)
memories = st.dictionaries(st.integers(0, 40), st.integers(0, 3), min_size=0, max_size=30)


def write_dump(folder: Path, memory: dict[int, int], lazy: bool) -> None:
    folder.mkdir()
    entries, data = [], []
    for number in sorted(memory):
        vaddr = BASE + number * pages.PAGE
        flags = pages.PE_PRESENT | (pages.PE_LAZY if lazy and number % 2 else 0)
        last = entries[-1] if entries else None
        if last and last[0] + last[1] * pages.PAGE == vaddr and last[2] == flags:
            entries[-1] = (last[0], last[1] + 1, flags)
        else:
            entries.append((vaddr, 1, flags))
        data.append(bytes([memory[number]]) * pages.PAGE)
    pages.write_pagemap(folder / "pagemap-1.img", pages.Pagemap(MAGIC, 1, entries))
    (folder / "pages-1.img").write_bytes(b"".join(data))


def read_back(index: pages.Index) -> dict[int, int]:
    memory = {}
    for vaddr, which, offset in zip(
        index.vaddrs.tolist(), index.which.tolist(), index.offsets.tolist(), strict=True
    ):
        with open(index.files[which], "rb") as f:
            f.seek(offset)
            page = f.read(pages.PAGE)
        assert len(set(page)) == 1
        memory[(vaddr - BASE) // pages.PAGE] = page[0]
    return memory


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dumps=st.lists(memories, min_size=1, max_size=4), lazy=st.booleans())
def test_every_dump_reads_back_whole_through_its_parents(
    tmp_path_factory: pytest.TempPathFactory, dumps: list[dict[int, int]], lazy: bool
) -> None:
    root = tmp_path_factory.mktemp("images")
    previous = None
    indexes = []
    for n, memory in enumerate(dumps):
        folder = root / str(n)
        write_dump(folder, memory, lazy)
        stored_before = (folder / "pages-1.img").stat().st_size
        previous = (folder, pages.share_or_index(folder, previous))
        indexes.append(previous[1]["pagemap-1.img"])
        if n:
            parent = dumps[n - 1]
            kept = sum(1 for page, value in memory.items() if parent.get(page) != value)
            assert (folder / "pages-1.img").stat().st_size == kept * pages.PAGE <= stored_before
            assert os.readlink(folder / pages.PARENT_LINK) == f"../{n - 1}"
    for memory, index in zip(dumps, indexes, strict=True):
        assert read_back(index) == memory
    # and from the images alone, as a restore sees them
    for n, memory in enumerate(dumps):
        parent = None
        for k in range(n + 1):
            parent = pages.index_of(root / str(k), "pagemap-1.img", parent)
        assert read_back(parent) == memory


def test_shared_runs_are_not_lazy(tmp_path: Path) -> None:
    """CRIU 4.1.1's lazy-pages daemon hangs on a page read through a parent link: runs read
    from the parent are restored up front (PE_LAZY dropped), the stored ones stay lazy."""
    write_dump(tmp_path / "0", {1: 1, 2: 1, 3: 2}, lazy=False)
    first = pages.share_or_index(tmp_path / "0", None)
    write_dump(tmp_path / "1", {1: 1, 2: 3, 3: 2}, lazy=False)
    pagemap = pages.read_pagemap(tmp_path / "1" / "pagemap-1.img")
    pagemap.entries = [(v, n, f | pages.PE_LAZY) for v, n, f in pagemap.entries]
    pages.write_pagemap(tmp_path / "1" / "pagemap-1.img", pagemap)
    pages.share(tmp_path / "1", tmp_path / "0", first)
    got = pages.read_pagemap(tmp_path / "1" / "pagemap-1.img").entries
    page = pages.PAGE
    assert got == [
        (BASE + page, 1, pages.PE_PARENT),
        (BASE + 2 * page, 1, pages.PE_PRESENT | pages.PE_LAZY),
        (BASE + 3 * page, 1, pages.PE_PARENT),
    ]
