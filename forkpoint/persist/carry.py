"""What a save of a session again takes from its last save: the images of the checkpoints
that save wrote, hard-linked into the new one instead of dumped again.

A parked checkpoint never changes, so the images of one already saved are still exactly it.
Saving a session again after more inputs then writes only the new checkpoints (each sharing
unchanged pages with the nearest one on disk, as every dump does), and the save is still
built hidden and renamed into place: the old session is whole until the new one is. The
images of a checkpoint are taken only when its id and its token are the same in the old
session (two forkpoints that went on from one restored session number their new
checkpoints alike), and with every image their parent links lead to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forkpoint.errors import ForkpointError
from forkpoint.persist import store
from forkpoint.persist.pages import PARENT_LINK

__all__ = ["Previous", "link_images", "previous"]


@dataclass(frozen=True)
class Previous:
    """The last save of a session, as far as a new save of it can use it."""

    session: store.Session
    images: Path
    same: frozenset[int]  # its checkpoints that are the same processes as ours

    def carried(self, wanted: set[int]) -> set[int]:
        """Which images to take for the ``wanted`` ids: those it has of them, and every image
        they read pages from. Empty if its links are not what a save writes."""
        out: set[int] = set()
        todo = list(wanted & self.same & set(self.session.kept))  # its tree lists the unsaved too
        while todo:
            cid = todo.pop()
            if cid in out:
                continue
            if cid not in self.session.kept:
                return set()  # a link out of what it saved: damaged, dump everything again
            out.add(cid)
            link = self.images / str(cid) / PARENT_LINK
            if link.is_symlink():
                target = os.readlink(link)
                parent = target.removeprefix("../")
                if not parent.isdigit() or target != f"../{parent}":
                    return set()
                todo.append(int(parent))
        return out

    def manifest_of(self, carried: set[int]) -> dict[str, list[Any]]:
        """The old manifest's entries of the ``carried`` images (hashed once, when written)."""
        heads = {str(cid) for cid in carried}
        return {path: entry for path, entry in self.session.images.items() if path.split("/")[0] in heads}


def previous(name: str, tokens: dict[int, str]) -> Previous | None:
    """The last save of session ``name``, if there is one this forkpoint can take images from
    (``tokens``: id -> token of each checkpoint in this forkpoint's tree)."""
    try:
        session, folder = store.load(name)
    except ForkpointError:
        return None  # none, or damaged: the new save dumps everything
    same = frozenset(
        entry["id"]
        for entry in session.tree
        if isinstance(entry.get("token"), str) and tokens.get(entry["id"]) == entry["token"]
    )
    return Previous(session, folder / "images", same)


def link_images(source: Path, target: Path) -> None:
    """Hard-link one checkpoint's images (files, and its parent link) into ``target``."""
    target.mkdir(mode=0o700, parents=True)
    for entry in os.scandir(source):
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target / entry.name)
        elif entry.is_file(follow_symlinks=False):
            os.link(entry.path, target / entry.name)
