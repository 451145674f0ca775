"""Everything the shell shows: the only place in forkpoint that writes to the terminal.

Colour is used only on a terminal and never when NO_COLOR is set (https://no-color.org).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from forkpoint.controller import Change, ExecResult, MemoryReport, Saved, SaveProgress, Status
from forkpoint.controller.events import Event, Output, Stream
from forkpoint.errors import ForkpointError
from forkpoint.shell.messages import death_text, event_style, event_text, hint
from forkpoint.tree import CheckpointState, CheckpointView, TreeView
from forkpoint.units import human_bytes

if TYPE_CHECKING:  # the store (hashing, CRIU's formats) only when sessions are listed
    from forkpoint.persist.store import Session

__all__ = ["Renderer", "human_bytes", "human_age"]

_STYLES = {"error": "31", "info": "36", "dim": "2", "warn": "33", "bold": "1"}


def saved_text(saved: Saved) -> str:
    """'saved [9] and 4 checkpoints of its branch as "x" (2 linked from its last save): 1.2 GB
    in 3.1 s', the line both the shell and the notebook give after a save."""
    before = len(saved.kept) - 1
    text = f"saved [{saved.checkpoint}]"
    if before:
        text += f" and {before} {'checkpoint' if before == 1 else 'checkpoints'} of its branch"
    text += f' as "{saved.name}"'
    if saved.carried:
        linked = "its last save" if saved.carried_from == saved.name else f'"{saved.carried_from}"'
        text += f" ({len(saved.carried)} linked from {linked})"
    return f"{text}: {human_bytes(saved.size)} in {saved.seconds:.1f} s"


def human_age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


class Renderer:
    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, notices: TextIO | None = None
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr  # tracebacks, as Python writes them
        # forkpoint's own sentences: on stdout in the shell; on stderr for `run`, whose stdout
        # is the program's (redirected, it must hold what python would write there)
        self.notices = notices or self.out
        self.color = self.out.isatty() and "NO_COLOR" not in os.environ
        self._partial = False  # a progress line is on screen

    def line(self, text: str = "", style: str | None = None, stream: TextIO | None = None) -> None:
        if self._partial:
            self.out.write("\r\x1b[K")
            self._partial = False
        if style and self.color:
            text = f"\x1b[{_STYLES[style]}m{text}\x1b[0m"
        stream = stream or self.out
        stream.write(text + "\n")
        stream.flush()

    def progress(self, where: SaveProgress) -> None:
        """A save's progress, on one line rewritten in place (terminals only); ``line``
        after it starts on a clean line."""
        if not self.out.isatty():
            return
        of = f" ({where.index} of {where.count})" if where.count > 1 else ""
        total = f" of {human_bytes(where.expected)}" if where.expected >= where.written else ""
        self.out.write(f"\r\x1b[Ksaving [{where.checkpoint}]{of}: {human_bytes(where.written)}{total}")
        self.out.flush()
        self._partial = True

    def transfer(self, verb: str, what: str, done: int, total: int) -> None:
        """An export's or import's progress, as ``progress`` draws a save's."""
        if not self.out.isatty():
            return
        of = f" of {human_bytes(total)} ({100 * done // total}%)" if total else ""  # a pipe's: not known
        self.out.write(f"\r\x1b[K{verb} {what}: {human_bytes(done)}{of}")
        self.out.flush()
        self._partial = True

    def event(self, event: Event) -> None:
        if isinstance(event, Output):  # pipes mode: the head's own output, as it wrote it
            stream = self.out if event.stream is Stream.STDOUT else self.err
            stream.write(event.text)
            stream.flush()
            return
        self.line(f"forkpoint: {event_text(event)}", event_style(event), self.notices)

    def error(self, exc: ForkpointError) -> None:
        said = hint(exc)
        self.line(f"forkpoint: {exc.message}" + (f" ({said})" if said else ""), "error", self.notices)

    def result(self, result: ExecResult) -> None:
        if result.traceback:
            self.line(result.traceback.rstrip("\n"), "error", self.err)
        death = death_text(result.death)
        if result.status is Status.DIED and result.rolled_back_to is None:
            self.line(f"the script's process {death}; edit the file and resume to go on", "error")
        elif result.status is Status.DIED:
            self.line(f"the head {death}; rewound to [{result.rolled_back_to}]", "error")
        elif result.rolled_back_to is not None:
            what = "interrupted; rolled back" if result.status is Status.INTERRUPTED else "rolled back"
            self.line(f"{what} to [{result.rolled_back_to}]", "info")

    def sessions(self, found: list[Session]) -> None:
        if not found:
            from forkpoint.persist.store import sessions_dir

            self.line(f"no saved sessions (in {sessions_dir()})")
            return
        rows = [("NAME", "SAVED", "SOURCE", "CHECKPOINTS", "SIZE")]
        for s in found:
            saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.saved))
            source = "".join(c if c.isprintable() else "?" for c in s.source[:60])  # an imported one's
            rows.append((s.name, saved, source, str(s.checkpoints), human_bytes(s.size)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.line("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

    def checkpoints(self, nodes: list[CheckpointView], current: int) -> None:
        now = time.time()
        self.line(f"  {'ID':>4} {'PARENT':>6}  {'LABEL':<12} {'AGE':>5} {'MEMORY':>9}  INPUT", "bold")
        for n in nodes:
            mark = "*" if n.id == current else " "
            parent = "" if n.parent is None else str(n.parent)
            title = n.title if len(n.title) <= 48 else n.title[:45] + "..."
            if n.skipped:
                title += f"  (+{n.skipped} {'hit' if n.skipped == 1 else 'hits'} skipped before it)"
            self.line(
                f"{mark} {n.id:>4} {parent:>6}  {(n.label or ''):<12} {human_age(now - n.created):>5} "
                f"{'on disk' if not n.alive else human_bytes(n.memory):>9}  {title}"
            )

    def tree(self, tree: TreeView) -> None:
        for text in tree_lines(tree):
            self.line(text)

    def diff(self, a: int, b: int, changes: list[Change]) -> None:
        if not changes:
            self.line(f"no names differ between [{a}] and [{b}]", "info")
            return
        for c in changes:
            if c.kind == "added":
                self.line(f"+ {c.name} = {c.after}")
            elif c.kind == "removed":
                self.line(f"- {c.name} (was {c.before})")
            else:
                self.line(f"~ {c.name}: {c.before} -> {c.after}")

    def memory(self, report: MemoryReport, current: int) -> None:
        head = report.head
        if head is not None:
            self.line(f"head: {human_bytes(head.rss)} resident, {human_bytes(head.uss)} its own")
        self.line(
            f"checkpoints: {len(report.checkpoints)} (at most {report.max_checkpoints}) holding "
            f"{human_bytes(report.held)} of a {human_bytes(report.budget)} budget"
        )
        self.line(f"RAM: {human_bytes(report.available_ram)} available of {human_bytes(report.total_ram)}")
        biggest = sorted(report.checkpoints.items(), key=lambda kv: -(kv[1].uss + kv[1].page_tables))[:5]
        for cid, mem in biggest:
            mark = "*" if cid == current else " "
            self.line(
                f"{mark} [{cid}] {human_bytes(mem.uss)} own pages"
                f" + {human_bytes(mem.page_tables)} page tables",
                "dim",
            )


def tree_lines(tree: TreeView) -> list[str]:
    """The tree with linear chains kept flat and only branches indented."""
    lines: list[str] = []
    stack: list[tuple[int, str, str]] = [(0, "", "")] if 0 in tree else []
    while stack:
        cid, lead, rest = stack.pop()
        while True:
            lines.append(lead + _node_text(tree[cid], tree.current))
            kids = sorted(c.id for c in tree.children(cid))
            if len(kids) != 1:
                break
            cid, lead = kids[0], rest
        for i, kid in reversed(list(enumerate(kids))):
            last = i == len(kids) - 1
            stack.append((kid, rest + ("└─" if last else "├─"), rest + ("  " if last else "│ ")))
    return lines


def _node_text(node: CheckpointView, current: int) -> str:
    text = f"[{node.id}]"
    if node.label:
        text += f" ({node.label})"
    text += f" {node.title}"
    if not node.alive:
        if node.stored:
            text += "  (on disk)"
        else:
            text += "  (not saved)" if node.state is CheckpointState.UNSAVED else "  (evicted)"
    if node.id == current:
        text += "  <- head"
    return text
