"""The checkpoint pool: the tree, the parked checkpoints' connections, memory accounting and
eviction.

A parked checkpoint is a paused process blocked on its connection; ``send`` and ``ask`` are
the one way to tell or ask it something, with one timeout policy: a checkpoint that does not
answer in time is reported, one whose connection ended is lost (a saved one goes back to
disk). A checkpoint on disk is brought back (restored by the session keeper) when something
needs its process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

from forkpoint.channel import Channel
from forkpoint.controller import memory
from forkpoint.controller.events import Event, Evicted, Limit
from forkpoint.controller.hub import Hub
from forkpoint.controller.memory import ProcessMemory
from forkpoint.controller.script import Script
from forkpoint.controller.supervisor import Supervisor
from forkpoint.errors import ForkpointError, ProtocolError
from forkpoint.protocol import Message
from forkpoint.tree import Checkpoint, CheckpointTree, choose_evictions

__all__ = ["ASK_TIMEOUT", "CheckpointPool"]

ASK_TIMEOUT = 120.0  # seconds a parked checkpoint has to answer a question
MEASURE_EVERY = 1.0  # seconds between exact budget decisions within an input


def headroom(budget: int) -> int:
    """How far below the budget eviction decisions aim. A reading is exact when made, but a
    checkpoint goes on for a moment after it (its hello, parking on its connection: up to
    0.7 MB of pages of its own, measured), and the head's last writes of an input land after the
    decision; 1% of the budget, at least 1 MiB and at most 64 MiB, covers that drift."""
    return min(max(budget // 100, 1 << 20), 64 << 20)


class CheckpointPool:
    def __init__(
        self,
        hub: Hub,
        supervisor: Supervisor,
        emit: Callable[[Event], None],
        budget: int,
        max_checkpoints: int,
    ) -> None:
        self.tree = CheckpointTree()
        self.budget = budget
        self._aim = max(budget - headroom(budget), 0)  # what decisions keep the sum under
        self.max_checkpoints = max_checkpoints
        self._hub = hub
        self._supervisor = supervisor
        self._emit = emit
        self._channels: dict[int, Channel] = {}
        self._asked = 0  # questions asked of parked checkpoints, numbered
        self._watch = memory.MemoryWatch()
        self._base: int | None = None  # where the head was at the last budget decision
        self._neighbours: set[int] = set()  # of checkpoints evicted at the last decision
        self._rise = 0  # the largest rise of one checkpoint between two measurements
        self._flushed = 0.0
        self._told_eviction = False  # the first eviction is told, later ones are quiet
        # Restores a checkpoint that is on disk (set by the session keeper of a restored session).
        self.bring_back: Callable[[Checkpoint], None] | None = None

    # ----------------------------------------------------------------- arrivals

    def taken(self, parent: int | None, source: str, msg: Message, script: Script | None) -> Checkpoint:
        """The head announced a checkpoint it forked: a new node, parented at ``parent``."""
        node = self.tree.add(parent, int(msg["pid"]), source, msg["label"], bool(msg["at_rest"]))
        if msg.get("site") is not None and script is not None:
            node.site, node.version = int(msg["site"]), len(script.versions) - 1
            node.called = tuple(str(name) for name in msg["called"])
            node.entry = msg.get("entry")
            if node.entry is None:
                node.source = script.describe(node.site)
            else:
                node.line, node.call = msg.get("line"), msg.get("call")
                node.outer = tuple(str(name) for name in msg["outer"])
                node.source = script.describe_call(node.entry, node.call, node.line)
        node.skipped = int(msg.get("skipped") or 0)
        self._supervisor.watch(node.pid)
        return node

    def adopt(self, node: Checkpoint, pid: int, channel: Channel) -> None:
        """A checkpoint restored from disk is parked here under ``pid``."""
        node.came_back(pid)
        self._channels[node.id] = channel

    # ----------------------------------------------------------------- talking to one

    def channel(self, node: Checkpoint) -> Channel:
        if not node.alive and node.stored and self.bring_back is not None:
            self.bring_back(node)
        if not node.alive:
            raise ForkpointError(f"checkpoint [{node.id}] was evicted.")
        ch = self._channels.get(node.id)
        if ch is None:
            arrival = self._hub.await_arrival(
                lambda h: h["role"] == "checkpoint" and h["pid"] == node.pid, node.pid
            )
            ch = self._channels[node.id] = arrival.channel
        return ch

    def send(self, node: Checkpoint, msg: Message) -> Channel:
        ch = self.channel(node)
        if not ch.send(msg):
            self.lost(node)
        return ch

    def ask(self, node: Checkpoint, msg: Message, op: str, timeout: float = ASK_TIMEOUT) -> Message:
        """Send ``msg`` to a parked checkpoint and wait for its ``op`` reply. Questions are
        numbered and answers repeat the number: one given up on (a timeout, Ctrl-C) costs
        nothing but its answer, dropped when it comes, and never the checkpoint; the
        checkpoint stops working on it when the next question comes."""
        self._asked += 1
        number = self._asked
        ch = self.send(node, {**msg, "ask": number})
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = ch.recv(timeout=max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise ForkpointError(
                    f"checkpoint [{node.id}] did not answer in {timeout:.0f} s (it is kept)."
                ) from None
            if reply is None:
                self.lost(node)
            if reply.get("ask") == number:
                break
        if reply["op"] != op:
            raise ProtocolError(f"expected {op}, got {reply['op']}")
        return reply

    def lost(self, node: Checkpoint) -> NoReturn:
        self.release(node)
        raise ForkpointError(f"checkpoint [{node.id}] is gone (its process ended).")

    def release(self, node: Checkpoint) -> None:
        """``node``'s process is no longer a parked checkpoint (it ended, or became the head)."""
        node.ended()
        ch = self._channels.pop(node.id, None)
        if ch is not None:
            ch.close()

    # ----------------------------------------------------------------- memory

    def measure_all(self) -> dict[int, ProcessMemory]:
        """Each live checkpoint's memory, measured now (``:checkpoints``, ``:mem``): the
        exact figures a user asks for, at O(checkpoints x memory) once."""
        self._apply(self._watch.take())
        per = {}
        for node in self.tree.alive():
            measured = memory.measure(node.pid)
            if measured is not None:
                per[node.id] = measured
                node.memory = measured.held
        return per

    def enforce_budget(self, current: int, between_inputs: bool) -> None:
        """Evict by policy when over budget, deciding on figures the watch measured off the
        input path. Only checkpoints whose USS can have changed are re-measured: the head's
        base before and after (the head's writes make pages unique to the checkpoint it
        shared them with), the new checkpoint's parent, and the neighbours of one evicted
        (pages it shared with them alone are theirs now). Near the budget (within the
        largest rise one measurement has shown) the waiting measurements are made now, so
        the decision is exact where it matters; within an input at most once per
        MEASURE_EVERY, since a site in a tight loop may checkpoint every millisecond."""
        tree = self.tree
        touched = {self._base, current, tree[current].parent, *self._neighbours}
        self._neighbours.clear()
        self._base = current
        self._watch.stale(tree[c].pid for c in touched if c is not None and c in tree and tree[c].alive)
        self._apply(self._watch.take())
        alive = tree.alive()
        total = sum(n.memory or 0 for n in alive)
        near = total + self._rise > self._aim
        now = time.monotonic()
        if near and (between_inputs or now - self._flushed >= MEASURE_EVERY):
            self._flushed = now
            self._apply(self._watch.flush())
        elif not near and len(alive) <= self.max_checkpoints:
            return  # nothing to decide on: an input far from the budget costs no measurement
        evict = choose_evictions(tree, current, self._aim, self.max_checkpoints)
        for cid in evict:
            node = tree[cid]
            ch = self._channels.pop(cid, None) or self._hub.claim(node.pid)
            node.ended()
            if ch is not None:
                ch.send({"op": "exit"})
                ch.close()
            else:
                self._supervisor.kill(node.pid)
        for cid in evict:  # measured at the next decision, once their processes have exited
            self._neighbours.update(self._alive_neighbours(cid))
        if evict and not self._told_eviction:
            # Told once: a site in a loop evicts at every checkpoint, and a line each would
            # drown the program's own output. Views of the tree show what is kept.
            self._told_eviction = True
            over_count = len(tree.alive()) + len(evict) > self.max_checkpoints
            limit = Limit.CHECKPOINTS if over_count else Limit.MEMORY
            self._emit(Evicted(tuple(evict), limit, self.max_checkpoints, self.budget))

    def _apply(self, measured: dict[int, ProcessMemory | None]) -> None:
        if not measured:
            return
        by_pid = {n.pid: n for n in self.tree.alive()}
        for pid, m in measured.items():
            node = by_pid.get(pid)
            if node is None or m is None:
                continue
            if node.memory is not None:
                self._rise = max(self._rise, m.held - node.memory)
            node.memory = m.held

    def _alive_neighbours(self, cid: int) -> list[int]:
        """The nearest live ancestor of ``cid`` and its nearest live descendants: the
        checkpoints that can have shared pages with it alone."""
        tree = self.tree
        out = [n.id for n in tree.held_chain(cid)[1:] if n.alive][:1]
        below = [c.id for c in tree.children(cid)]
        while below:
            c = below.pop()
            if tree[c].alive:
                out.append(c)
            else:
                below.extend(n.id for n in tree.children(c))
        return out

    # ----------------------------------------------------------------- teardown

    def close(self) -> list[int]:
        """EOF to every parked checkpoint (each exits at once); the pids to make sure of."""
        self._watch.close()
        agents = [n.pid for n in self.tree.alive()]
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        for node in self.tree.alive():
            node.ended()
        return agents
