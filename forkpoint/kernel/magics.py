"""The kernel's own magics: a cell that holds only these lines runs in the kernel, on the
engine, and makes no checkpoint. They are the shell's commands in a notebook's spelling,
and say what they did in the shell's words (``shell/render.py``), or as HTML where a
notebook shows it better (``%tree``).

Also ``CellRuns``: which checkpoint each cell's latest run began at, for ``%autorewind``.
"""

from __future__ import annotations

import fnmatch
import html
import io
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from forkpoint.controller import Controller
from forkpoint.controller.results import Rewound, Status
from forkpoint.errors import ForkpointError
from forkpoint.kernel import ENGINE_MAGICS
from forkpoint.shell.render import Renderer, saved_text, tree_lines

if TYPE_CHECKING:
    from forkpoint.kernel.kernel import ForkpointKernel

__all__ = ["CellRuns", "History", "parse", "run"]

Line = tuple[str, str]  # the magic's name and the rest of its line


def parse(code: str) -> list[Line] | None:
    """The cell's lines as the kernel's magics, or None if it holds anything else."""
    lines: list[Line] = []
    for raw in code.splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if not text.startswith("%") or text.startswith("%%"):
            return None
        name, _, rest = text[1:].partition(" ")
        if name not in ENGINE_MAGICS:
            return None
        lines.append((name, rest.strip()))
    return lines or None


class CellRuns:
    """Cells by the notebook's cell id: where each one's latest run began."""

    def __init__(self) -> None:
        self.autorewind = False
        self._began: dict[str, int] = {}

    def ran(self, cell_id: str | None, checkpoint: int) -> None:
        if cell_id:
            self._began[cell_id] = checkpoint

    def before(self, cell_id: str | None) -> int | None:
        return self._began.get(cell_id) if cell_id else None


class History:
    """Every cell the kernel ran, as Jupyter's history requests ask for it (session 1)."""

    SESSION = 1

    def __init__(self) -> None:
        self._cells: dict[int, tuple[str, str | None]] = {}

    def add(self, count: int, code: str) -> None:
        self._cells[count] = (code, None)

    def result(self, count: int, plain: str) -> None:
        if count in self._cells and plain:
            self._cells[count] = (self._cells[count][0], plain)

    def get(
        self,
        access: str,
        output: bool,
        start: int = 0,
        stop: int | None = None,
        n: int | None = None,
        pattern: str | None = None,
        unique: bool = False,
    ) -> list[tuple[int, int, object]]:
        rows = sorted(self._cells.items())
        if access == "range":
            rows = [r for r in rows if r[0] >= start and (stop is None or r[0] < stop)]
        elif access == "search":
            rows = [r for r in rows if fnmatch.fnmatchcase(r[1][0], pattern or "*")]
            if unique:  # the latest run of each
                latest = {code: count for count, (code, _) in rows}
                rows = [r for r in rows if latest[r[1][0]] == r[0]]
            rows = rows[-n:] if n else rows
        elif access == "tail":
            rows = rows[-n:] if n else rows
        else:
            rows = []
        return [(self.SESSION, count, (code, out) if output else code) for count, (code, out) in rows]


def _text(kernel: ForkpointKernel, draw: Callable[[Renderer], None]) -> None:
    out = io.StringIO()
    draw(Renderer(out=out, err=out))
    kernel.say(out.getvalue())


def _said_rewind(kernel: ForkpointKernel, rewound: Rewound) -> None:
    kernel.say(f"rewound to [{rewound.checkpoint}]\n")
    result = rewound.continued
    if result is not None and result.status is not Status.OK:
        kernel.say(f"{result.traceback or ''}rolled back to [{result.rolled_back_to}]\n", "stderr")


def run(kernel: ForkpointKernel, line: Line) -> None:
    """Run one magic line; a ``ForkpointError`` is the user's to read."""
    name, args = line
    c: Controller = kernel.controller
    words = shlex.split(args)
    if name == "checkpoints":
        _text(kernel, lambda r: r.checkpoints(c.checkpoints(), c.current))
    elif name == "tree":
        _tree(kernel, c)
    elif name == "rewind":
        if len(words) != 1:
            raise ForkpointError("%rewind needs one checkpoint: an id, a label or -N.")
        _said_rewind(kernel, c.rewind(words[0]))
    elif name == "undo":
        _said_rewind(kernel, c.undo())
    elif name == "label":
        if not 1 <= len(words) <= 2:
            raise ForkpointError("%label needs a name (and a checkpoint, if not this one).")
        node = c.label(words[0], words[1] if len(words) > 1 else None)
        kernel.say(f"labelled [{node.id}] {node.label!r}\n")
    elif name == "diff":
        if not 1 <= len(words) <= 2:
            raise ForkpointError("%diff needs one or two checkpoints.")
        a = c.find(words[0]).id
        b = c.find(words[1]).id if len(words) > 1 else c.current
        _text(kernel, lambda r: r.diff(a, b, c.diff(a, b)))
    elif name == "mem":
        _text(kernel, lambda r: r.memory(c.memory(), c.current))
    elif name == "save":
        _save(kernel, c, words)
    elif name == "sessions":
        from forkpoint.persist.store import list_sessions

        _text(kernel, lambda r: r.sessions(list_sessions()))
    elif name == "restore":
        if len(words) != 1:
            raise ForkpointError("%restore needs the name of a saved session.")
        kernel.restore(words[0])
        kernel.say(f'restored "{words[0]}": the head is at [{kernel.controller.current}]\n')
    elif name == "autorewind":
        _autorewind(kernel, words)


def _tree(kernel: ForkpointKernel, c: Controller) -> None:
    lines = tree_lines(c.view())
    rows = "\n".join(f"<b>{html.escape(t)}</b>" if t.endswith("<- head") else html.escape(t) for t in lines)
    kernel.say_html(f"<pre>{rows}</pre>", "\n".join(lines))


def _save(kernel: ForkpointKernel, c: Controller, words: list[str]) -> None:
    from forkpoint.shell.commands import parse_save

    request = parse_save(words, "%save")
    saved = c.save(
        request.name, request.ref, replace=request.force, scope=request.scope, disk_budget=request.disk
    )
    kernel.say(saved_text(saved) + "\n")


def _autorewind(kernel: ForkpointKernel, words: list[str]) -> None:
    if words and words[0] not in ("on", "off"):
        raise ForkpointError("%autorewind takes on or off.")
    if words:
        kernel.cells.autorewind = words[0] == "on"
    state = (
        "on: a cell run again first rewinds to where its last run began" if kernel.cells.autorewind else "off"
    )
    kernel.say(f"autorewind is {state}\n")
