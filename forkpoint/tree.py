"""The checkpoint tree: pure data, no processes.

Ids are small integers handed out in order and never reused within a controller's life;
checkpoint 0 is the fresh interpreter. A checkpoint that was evicted stays in the tree (so
lineage and a drawn tree stay meaningful) but its state is ``GONE``.

The eviction policy lives here too, as a pure function, so it is tested without forking.
Front ends get frozen ``CheckpointView``s and a ``TreeView``, never the live nodes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from types import MappingProxyType
from typing import Any

from forkpoint.errors import ForkpointError, Reason

__all__ = [
    "Checkpoint",
    "CheckpointState",
    "CheckpointTree",
    "CheckpointView",
    "TreeView",
    "choose_evictions",
    "thinned_branch",
    "on_stack",
]


class CheckpointState(Enum):
    """Where a checkpoint's state is held. Its transitions are ``Checkpoint`` methods."""

    ALIVE = "alive"  # a parked process
    RESTORED = "restored"  # a parked process brought back from a saved session, still on disk too
    ON_DISK = "on disk"  # in a saved session only: restored when something needs it
    LAZY_ON_DISK = "lazy on disk"  # the same, restored with lazy pages: it becomes the head itself
    GONE = "gone"  # evicted, or its process ended; kept in the tree for lineage
    UNSAVED = "not saved"  # in a restored session: taken before its save, not saved with it

    @property
    def alive(self) -> bool:
        """A process holds it now."""
        return self in _HOLD_A_PROCESS

    @property
    def stored(self) -> bool:
        """A saved session holds it."""
        return self in (CheckpointState.RESTORED, CheckpointState.ON_DISK, CheckpointState.LAZY_ON_DISK)

    @property
    def usable(self) -> bool:
        """It can be rewound to: alive, or brought back from disk."""
        return self not in _GONE_FOR_GOOD


_HOLD_A_PROCESS = frozenset({CheckpointState.ALIVE, CheckpointState.RESTORED})
_GONE_FOR_GOOD = frozenset({CheckpointState.GONE, CheckpointState.UNSAVED})  # no transition leaves these


# The current branch keeps this many recent checkpoints; older ones only at power-of-two depths.
DENSE = 8


@dataclass
class Checkpoint:
    id: int
    parent: int | None
    pid: int
    source: str
    label: str | None = None
    at_rest: bool = True
    created: float = field(default_factory=time.time)
    state: CheckpointState = CheckpointState.ALIVE
    # Which process state this is, across saves and restores: a save of a session again keeps
    # the images of a checkpoint whose id and token its last save has (ids alone can repeat
    # when two forkpoints go on from one restored session).
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    # In a restored session, how its saved copy comes back (ON_DISK or LAZY_ON_DISK): the
    # state it returns to when its restored process ends. None: it has no saved copy.
    restore_as: CheckpointState | None = None
    memory: int | None = None  # bytes only this checkpoint holds (USS), when measured
    site: int | None = None  # in a script: the top-level statement it follows
    version: int | None = None  # in a script: which version of the source was running
    called: tuple[str, ...] = ()  # in a script: functions first called in the statement before
    entry: str | None = None  # in a script: the function whose call this checkpoint is in
    line: int | None = None  # ... before this line of that call (None: at the call's entry)
    call: int | None = None  # ... which call of that function it is
    outer: tuple[str, ...] = ()  # ... the functions running further out, innermost first
    skipped: int = 0  # hits of sites in functions that took no checkpoint since the one before

    @property
    def alive(self) -> bool:
        return self.state.alive

    @property
    def stored(self) -> bool:
        return self.state.stored

    @property
    def usable(self) -> bool:
        return self.state.usable

    def came_back(self, pid: int) -> None:
        """Its saved process was restored and is parked under ``pid``."""
        self.pid, self.state = pid, CheckpointState.RESTORED

    def ended(self) -> None:
        """Its process is gone (evicted, lost, became the head, or the controller closed): a
        saved one goes back to disk, any other is gone for good."""
        self.state = self.restore_as or CheckpointState.GONE
        if self.restore_as is not None:
            self.memory = None

    def view(self) -> CheckpointView:
        return CheckpointView(**{name: getattr(self, name) for name in _VIEW_FIELDS})

    def to_meta(self) -> dict[str, Any]:
        """What a saved session keeps of this checkpoint (plain JSON)."""
        return {
            "id": self.id,
            "token": self.token,
            "parent": self.parent,
            "source": self.source,
            "label": self.label,
            "at_rest": self.at_rest,
            "created": self.created,
            "site": self.site,
            "version": self.version,
            "called": list(self.called),
            "entry": self.entry,
            "line": self.line,
            "call": self.call,
            "outer": list(self.outer),
        }

    @property
    def title(self) -> str:
        """One line saying what made this checkpoint."""
        if self.id == 0:
            return "(fresh interpreter)"
        if self.site is not None:
            return self.source if self.entry is not None else f"after {self.source}"
        first = self.source.strip().splitlines()[0] if self.source.strip() else ""
        more = " ..." if self.source.strip().count("\n") else ""
        text = first + more
        return text if self.at_rest else f"checkpoint() in: {text}"


class CheckpointTree:
    """All checkpoints of one controller, alive or evicted.

    The tree keeps every checkpoint ever taken, for lineage, while only a bounded number hold
    a process or a saved copy; what an input asks of it (the live ones, the live part of the
    branch, a node's children) is answered from indexes of those, so that its cost does not
    grow with the inputs run (walking every node cost 4 ms an input after 600). Gone is for
    good (no transition leaves ``GONE`` or ``UNSAVED``), which lets the indexes drop them.
    """

    def __init__(self) -> None:
        self.nodes: dict[int, Checkpoint] = {}
        self._next = 0
        self._held: dict[int, Checkpoint] = {}  # not gone when last looked at, by id
        self._kids: dict[int, list[int]] = {}
        self._skip: dict[int, int | None] = {}  # a gone node's nearest ancestor not gone then

    def add(
        self, parent: int | None, pid: int, source: str, label: str | None = None, at_rest: bool = True
    ) -> Checkpoint:
        if parent is not None and parent not in self.nodes:
            raise KeyError(parent)
        node = Checkpoint(self._next, parent, pid, source, label, at_rest)
        self.nodes[node.id] = node
        self._held[node.id] = node
        if parent is not None:
            self._kids.setdefault(parent, []).append(node.id)
        self._next += 1
        return node

    def restore_node(self, meta: dict[str, Any], state: CheckpointState) -> Checkpoint:
        """Add a checkpoint of a saved session in ``state`` (on disk, or gone when it was not
        saved); ids are kept, so they go on as they were."""
        parent = meta.get("parent")
        node = self.add(parent if isinstance(parent, int) else None, 0, str(meta.get("source", "")))
        if node.id != meta.get("id"):
            raise ValueError(f"saved checkpoint {meta.get('id')} restored as {node.id}")
        node.state = state
        node.restore_as = state if state.stored else None
        node.label = meta["label"] if isinstance(meta.get("label"), str) else None
        node.at_rest = bool(meta.get("at_rest", True))
        if isinstance(meta.get("token"), str):
            node.token = meta["token"]
        created = meta.get("created")
        if isinstance(created, (int, float)):
            node.created = float(created)  # resume says how much work a checkpoint skips
        ints = {k: meta.get(k) for k in ("site", "version", "line", "call")}
        node.site, node.version, node.line, node.call = (
            v if isinstance(v, int) else None for v in ints.values()
        )
        node.entry = meta["entry"] if isinstance(meta.get("entry"), str) else None
        node.called = tuple(str(c) for c in meta.get("called") or ())
        node.outer = tuple(str(c) for c in meta.get("outer") or ())
        return node

    def __getitem__(self, cid: int) -> Checkpoint:
        return self.nodes[cid]

    def __contains__(self, cid: object) -> bool:
        return cid in self.nodes

    def alive(self) -> list[Checkpoint]:
        """The checkpoints a process holds now, oldest first (asked several times an input,
        so the states are looked up here, not through two properties a node)."""
        alive, gone = [], []
        for node in self._held.values():
            if node.state in _HOLD_A_PROCESS:
                alive.append(node)
            elif node.state in _GONE_FOR_GOOD:
                gone.append(node.id)
        for cid in gone:
            del self._held[cid]
        return alive

    def held_chain(self, cid: int) -> list[Checkpoint]:
        """``cid``'s node and those of its ancestors not gone (alive or on disk), nearest
        first. Each run of gone ancestors is walked once: the walk leaves every gone node it
        passed pointing at the node above the run."""
        nodes, skip = self.nodes, self._skip
        out = [nodes[cid]]
        above = nodes[cid].parent
        while above is not None:
            passed = []
            while above is not None and not nodes[above].usable:
                passed.append(above)
                above = skip[above] if above in skip else nodes[above].parent
            for gone in passed:
                skip[gone] = above
            if above is not None:
                out.append(nodes[above])
                above = nodes[above].parent
        return out

    def usable(self) -> list[Checkpoint]:
        """Checkpoints that can be rewound to (alive or on disk), oldest first."""
        return sorted((n for n in self.nodes.values() if n.usable), key=lambda n: n.id)

    def chain(self, cid: int) -> list[Checkpoint]:
        """``cid``'s node and its ancestors' nodes, nearest first."""
        return [self.nodes[aid] for aid in self.ancestors(cid)]

    def view(self, current: int) -> TreeView:
        return TreeView(MappingProxyType({cid: n.view() for cid, n in self.nodes.items()}), current)

    def children(self, cid: int) -> list[Checkpoint]:
        return [self.nodes[k] for k in self._kids.get(cid, ())]

    def ancestors(self, cid: int) -> list[int]:
        """``cid`` and its ancestors, nearest first."""
        out = []
        node: int | None = cid
        while node is not None:
            out.append(node)
            node = self.nodes[node].parent
        return out

    def at_rest_base(self, cid: int) -> int:
        """The nearest checkpoint at or above ``cid`` taken between inputs (not mid-input)."""
        node: int | None = cid
        while node is not None:  # walked, not listed: the chain is as long as the session
            if self.nodes[node].at_rest:
                return node
            node = self.nodes[node].parent
        return 0

    def latest_with_label(self, label: str) -> Checkpoint | None:
        """The newest live checkpoint with ``label``, else the newest with it at all."""
        alive = [n for n in self.alive() if n.label == label]
        if alive:
            return alive[-1]
        found = [n for n in self.nodes.values() if n.label == label]
        return found[-1] if found else None

    def resolve(self, ref: str, current: int) -> Checkpoint:
        """Turn ``ID``, ``-N`` or ``LABEL`` into a live checkpoint, or say clearly why not."""
        ref = ref.strip()
        if ref.startswith("-") and ref[1:].isdigit():
            steps = int(ref[1:])
            chain = self.ancestors(current)
            if steps >= len(chain):
                raise ForkpointError(
                    f"[{current}] has only {len(chain) - 1} checkpoints before it, not {steps}."
                )
            node = self.nodes[chain[steps]]
        elif ref.isdigit():
            if int(ref) not in self.nodes:
                raise ForkpointError(
                    f"there is no checkpoint [{_shown(ref)}].", reason=Reason.NO_SUCH_CHECKPOINT
                )
            node = self.nodes[int(ref)]
        else:
            found = self.latest_with_label(ref)
            if found is None:
                labels = sorted({_shown(n.label) for n in self.nodes.values() if n.label})
                shown = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
                hint = f"labels: {shown}" if labels else "no checkpoint has a label yet"
                raise ForkpointError(f"no checkpoint is labelled {_shown(ref)!r}.", hint)
            node = found
        if node.state is CheckpointState.UNSAVED:
            held = [f"[{n.id}]" for n in self.usable()]
            shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
            raise ForkpointError(
                f"checkpoint [{node.id}] was not saved with this session; it holds {shown}.",
                reason=Reason.NOT_SAVED,
            )
        if not node.usable:
            raise ForkpointError(
                f"checkpoint [{node.id}] was evicted to stay within the memory budget.",
                reason=Reason.EVICTED,
            )
        return node


def on_stack(tree: CheckpointTree, current: int) -> set[int]:
    """In a script, the checkpoints that start what is running at ``current``: the one before
    the running top-level statement (``resume --from`` it redoes the statement), the first
    one in the running call, and the latest one in each call further out."""
    node = tree[current]
    if node.site is None or node.entry is None:
        return set()
    found: set[int] = set()
    first_in_call = None
    outer = set(node.outer)
    for other in tree.held_chain(current)[1:]:
        cid = other.id
        if not other.alive:
            continue
        if other.entry is None and other.site is not None and other.site < node.site:
            found.add(cid)
            break
        if other.entry == node.entry and other.call == node.call:
            first_in_call = cid  # walking back: the earliest one is the last seen
        elif other.entry in outer:
            outer.discard(other.entry)
            found.add(cid)
    return found | ({first_in_call} if first_in_call is not None else set())


def thinned_branch(branch: list[int]) -> tuple[list[int], list[int]]:
    """What the policy keeps of a branch (ids nearest first): its ``DENSE`` most recent
    checkpoints, and further back those at power-of-two distances (recent dense, old sparse)."""
    sparse = [cid for depth, cid in enumerate(branch) if depth >= DENSE and depth & (depth - 1) == 0]
    return branch[:DENSE], sparse


def choose_evictions(tree: CheckpointTree, current: int, budget: int, max_count: int) -> list[int]:
    """Ids to evict so that at most ``max_count`` checkpoints hold at most ``budget`` bytes.

    Kept whatever it costs: checkpoint 0, ``current`` and its at-rest base, the latest
    checkpoint of each label, and in a script those that start what is running
    (``on_stack``). The current branch keeps its ``DENSE`` most recent checkpoints and,
    further back, those at power-of-two distances (recent dense, old
    sparse). Evicted first: other branches, oldest first; then the thinned-out part of the
    current branch, oldest first; then, only if still over, the sparse ones (oldest first).
    """
    alive = {n.id: n for n in tree.alive()}
    protected = {0, current, tree.at_rest_base(current)} | on_stack(tree, current)
    for label in {n.label for n in alive.values() if n.label}:
        latest = tree.latest_with_label(label)
        if latest is not None:
            protected.add(latest.id)
    branch = [n.id for n in tree.held_chain(current) if n.id in alive]
    dense, sparse = (set(part) for part in thinned_branch(branch))
    off_branch = sorted(cid for cid in alive if cid not in branch)
    thinned = sorted(cid for cid in branch if cid not in dense and cid not in sparse)
    order = off_branch + thinned + sorted(sparse) + sorted(dense)
    order = [cid for cid in order if cid not in protected]

    count = len(alive)
    total = sum(n.memory or 0 for n in alive.values())
    evict = []
    for cid in order:
        if count <= max_count and total <= budget:
            break
        evict.append(cid)
        count -= 1
        total -= alive[cid].memory or 0
    return evict


@dataclass(frozen=True)
class CheckpointView:
    """What a front end may know of a checkpoint: a frozen copy, never the live node."""

    id: int
    parent: int | None
    pid: int
    source: str
    title: str
    label: str | None
    at_rest: bool
    created: float
    state: CheckpointState
    memory: int | None
    site: int | None
    entry: str | None
    line: int | None
    call: int | None
    skipped: int  # hits of sites that took no checkpoint between the one before and this

    @property
    def alive(self) -> bool:
        return self.state.alive

    @property
    def stored(self) -> bool:
        return self.state.stored


_VIEW_FIELDS = tuple(f.name for f in fields(CheckpointView))


@dataclass(frozen=True)
class TreeView:
    """The whole tree as frozen views, and the checkpoint the head is at."""

    nodes: Mapping[int, CheckpointView]
    current: int

    def __getitem__(self, cid: int) -> CheckpointView:
        return self.nodes[cid]

    def __contains__(self, cid: object) -> bool:
        return cid in self.nodes

    def __iter__(self) -> Iterator[CheckpointView]:
        return iter(sorted(self.nodes.values(), key=lambda n: n.id))

    def children(self, cid: int) -> list[CheckpointView]:
        return [n for n in self if n.parent == cid]

    def alive(self) -> list[CheckpointView]:
        return [n for n in self if n.alive]


def _shown(text: str, most: int = 40) -> str:
    """What of a name the user typed an error repeats: all of it, or its start."""
    return text if len(text) <= most else text[: most - 1] + "…"
