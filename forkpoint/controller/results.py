"""What the engine's verbs return: frozen data, no sentences."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from forkpoint.controller.memory import ProcessMemory
from forkpoint.controller.supervisor import Death

__all__ = [
    "Change",
    "ChangeKind",
    "ExecResult",
    "MemoryReport",
    "Resumed",
    "Rewound",
    "SaveProgress",
    "Saved",
    "Status",
    "changes_between",
]


class Status(StrEnum):
    """How an input (or a script, or the rest of a rewound input) ended."""

    OK = "ok"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    DIED = "died"
    EXIT = "exit"
    PAUSED = "paused"  # a script's head rewound to a checkpoint, waiting there for resume


@dataclass(frozen=True)
class ExecResult:
    status: Status
    checkpoint: int | None = None
    traceback: str | None = None
    exit_code: int | None = None
    rolled_back_to: int | None = None
    death: Death | None = None


@dataclass(frozen=True)
class Saved:
    name: str
    checkpoint: int  # the one it is saved at, and restores to
    size: int  # bytes on disk
    seconds: float
    kept: list[int]  # every checkpoint it holds, oldest first
    carried: list[int]  # those taken from a session on disk, not dumped again
    carried_from: str = ""  # that session: the last save of this one, or the one restored


@dataclass(frozen=True)
class SaveProgress:
    """Where a save is, for a progress line: checkpoint ``index`` of ``count`` is being
    written by CRIU, ``written`` bytes of about ``expected`` (its resident memory)."""

    checkpoint: int
    index: int
    count: int
    written: int
    expected: int


@dataclass(frozen=True)
class Rewound:
    checkpoint: int
    continued: ExecResult | None  # set when the checkpoint was mid-input: the rest ran


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class Change:
    name: str
    kind: ChangeKind
    before: str | None
    after: str | None


def changes_between(left: dict[str, dict[str, str]], right: dict[str, dict[str, str]]) -> list[Change]:
    """Names whose values differ between two checkpoints' summaries (name -> type, digest
    and preview, as a checkpoint's ``probe`` gives them)."""
    changes = []
    for name in sorted(set(left) | set(right)):
        x, y = left.get(name), right.get(name)
        if x is None and y is not None:
            changes.append(Change(name, ChangeKind.ADDED, None, y["preview"]))
        elif y is None and x is not None:
            changes.append(Change(name, ChangeKind.REMOVED, x["preview"], None))
        elif x is not None and y is not None and (x["digest"], x["type"]) != (y["digest"], y["type"]):
            changes.append(Change(name, ChangeKind.CHANGED, x["preview"], y["preview"]))
    return changes


@dataclass(frozen=True)
class MemoryReport:
    head: ProcessMemory | None
    checkpoints: dict[int, ProcessMemory]
    budget: int
    max_checkpoints: int
    total_ram: int
    available_ram: int

    @property
    def held(self) -> int:
        return sum(m.uss + m.page_tables for m in self.checkpoints.values())


@dataclass(frozen=True)
class Resumed:
    checkpoint: int
    where: str  # what the checkpoint follows, e.g. "line 12: boxes = detect(frames)"
    skipped: float  # seconds of the first run that the resume did not redo
    result: ExecResult
