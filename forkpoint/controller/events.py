"""The engine's events: what happened, as data. Front ends put them in words.

The engine emits these through the ``on_event`` callback in the order they happen, the
head's output (in pipes mode) included, so a front end that renders them in order shows
output and notices as they were. No event holds a sentence, a shell command or a CLI flag:
``shell/render.py`` says them for a terminal, and another front end (a notebook) can say
them its own way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from forkpoint.controller.resume_policy import Blocker
from forkpoint.controller.supervisor import Death

__all__ = [
    "CodeSwapped",
    "ConnectionRefused",
    "RuntimeDirRefused",
    "FilesNotRewound",
    "CudaInUse",
    "Event",
    "Evicted",
    "FilesRewound",
    "HeadDied",
    "HeadNotice",
    "InterruptIgnored",
    "Limit",
    "LineSiteGone",
    "NoCheckpoint",
    "OldCallsRan",
    "Outbox",
    "Output",
    "Display",
    "CommMessage",
    "DisplayKind",
    "ResumeBlocked",
    "Resuming",
    "StartingOver",
    "Stream",
    "ThreadsLeftOut",
    "UnsafePool",
    "StalledInPool",
]


class Limit(Enum):
    """Which limit forced an eviction."""

    CHECKPOINTS = "checkpoints"
    MEMORY = "memory"


class Stream(Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True)
class Evicted:
    """Checkpoints were evicted (emitted once per controller: later evictions are quiet)."""

    ids: tuple[int, ...]
    limit: Limit
    max_checkpoints: int
    budget: int  # bytes


@dataclass(frozen=True)
class HeadDied:
    """The head died between inputs; a new one was forked from ``rewound_to``."""

    death: Death
    rewound_to: int


@dataclass(frozen=True)
class InterruptIgnored:
    """Ctrl-C was passed on a second ago and the input still runs."""


@dataclass(frozen=True)
class ConnectionRefused:
    """A process of another user connected to the controller's socket."""

    uid: int
    pid: int


@dataclass(frozen=True)
class FilesNotRewound:
    """A rewind to ``checkpoint`` put memory back, but these files, opened for writing since
    the branch parted from it, stay as they are on disk."""

    checkpoint: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class RuntimeDirRefused:
    """The shared runtime dir is not this user's (another made it first, to deny service, or
    by mistake): a fresh private one is used instead."""

    refused: str
    instead: str


@dataclass(frozen=True)
class CodeSwapped:
    """A resumed head runs the new code of these functions (keys: qualname, module:qualname)."""

    functions: tuple[str, ...]


@dataclass(frozen=True)
class ThreadsLeftOut:
    """Other threads were running when a checkpoint was taken: it holds only the one that took
    it. ``pools``: native pools loaded that the agent resets before a fork, which a thread
    inside one at that moment defeats."""

    threads: tuple[str, ...]
    pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnsafePool:
    """A native thread pool that no fork keeps (polars') is running at a checkpoint: in a head
    forked from it, or from any later one, the library waits forever at its next parallel call."""

    pool: str


@dataclass(frozen=True)
class StalledInPool:
    """The running input has used no CPU for a while in a head that lost ``pools`` (see
    ``UnsafePool``): it is most likely waiting in one of them, for good."""

    pools: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class CudaInUse:
    """The head has initialised CUDA, which a fork does not copy."""


@dataclass(frozen=True)
class NoCheckpoint:
    """The head could not fork a checkpoint after an input (``error``: the OS's words)."""

    error: str


@dataclass(frozen=True)
class FilesRewound:
    """A new head cut files the process was writing back to where they were at the checkpoint
    (``rewound``), and left others as they are (``kept``: replaced at their path since, or
    shorter now), where going on may not give what a fresh run would."""

    rewound: tuple[str, ...]
    kept: tuple[str, ...]


@dataclass(frozen=True)
class HeadNotice:
    """A notice in words from an agent of another forkpoint version (a restored session)."""

    text: str


@dataclass(frozen=True)
class ResumeBlocked:
    """A later checkpoint could not go on with the new code; the resume starts earlier."""

    checkpoint: int
    blocker: Blocker


@dataclass(frozen=True)
class LineSiteGone:
    """The statement a line checkpoint was before is gone from the edited file."""

    path: str
    line: int


@dataclass(frozen=True)
class Resuming:
    """A resume goes on from ``checkpoint`` (``title`` says where) and skips that much work."""

    checkpoint: int
    title: str
    skipped: float  # seconds of the first run
    hits_again: int = 0  # hits of sites after it that took no checkpoint (spacing): they run again


@dataclass(frozen=True)
class StartingOver:
    """No checkpoint can continue the new code: the script runs again from its start."""


@dataclass(frozen=True)
class OldCallsRan:
    """Earlier calls of the function resumed into, in the same statement, ran its old code;
    a resume from ``redo_from`` (None: only a new run) does them again."""

    function: str
    calls: int
    redo_from: int | None


@dataclass(frozen=True)
class Output:
    """What the head wrote (pipes mode only), in order with the other events."""

    stream: Stream
    text: str


class DisplayKind(Enum):
    DISPLAY_DATA = "display_data"
    UPDATE_DISPLAY_DATA = "update_display_data"
    EXECUTE_RESULT = "execute_result"
    CLEAR_OUTPUT = "clear_output"
    ERROR = "error"  # data: ename, evalue, traceback (a list of lines, as IPython formats it)
    PAGE = "page"  # what ``?`` shows in a pager: the reply's payload (metadata: start)


@dataclass(frozen=True)
class CommMessage:
    """A notebook head's comm message for the front end (an ipywidgets update): comm_open,
    comm_msg or comm_close, its content, metadata and binary buffers."""

    msg_type: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    buffers: tuple[bytes, ...]


@dataclass(frozen=True)
class Display:
    """A notebook head's rich output (a mime bundle keyed by type, as Jupyter has it), in
    order with its ``Output``: the head flushes its streams before it sends one."""

    kind: DisplayKind
    data: dict[str, Any]
    metadata: dict[str, Any]
    transient: dict[str, Any]


Event = (
    Evicted
    | HeadDied
    | InterruptIgnored
    | ConnectionRefused
    | RuntimeDirRefused
    | FilesNotRewound
    | CodeSwapped
    | ThreadsLeftOut
    | UnsafePool
    | StalledInPool
    | CudaInUse
    | NoCheckpoint
    | FilesRewound
    | HeadNotice
    | ResumeBlocked
    | LineSiteGone
    | Resuming
    | StartingOver
    | OldCallsRan
    | Output
    | Display
    | CommMessage
)


class Outbox:
    """Delivers events to the front end, holding evictions back while an input runs: the
    running program owns the terminal, so they are told when the head next waits, not in the
    middle of a line it is printing."""

    def __init__(self, deliver: Callable[[Event], None], running: Callable[[], bool]) -> None:
        self._deliver = deliver
        self._running = running
        self._held: list[Event] = []

    def emit(self, event: Event) -> None:
        if isinstance(event, Evicted) and self._running():
            self._held.append(event)
            return
        self._deliver(event)

    def release(self) -> None:
        held, self._held = self._held, []
        for event in held:
            self._deliver(event)
