"""The driver: runs inputs in the head and moves it between checkpoints.

It keeps the head's ``Position`` (its state and the checkpoint it is at), runs an input to
its end (Ctrl-C included), replaces the head with a fork of a checkpoint (a rewind; the rest
of a mid-input checkpoint's input runs on), and *rolls back* after a failed input: the head
is replaced by a fork of the checkpoint the input started from.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from forkpoint.controller.events import Event, HeadDied, InterruptIgnored, Outbox
from forkpoint.controller.head import HeadLink
from forkpoint.controller.interrupts import Action, Interrupts, counting_sigint
from forkpoint.controller.pool import CheckpointPool
from forkpoint.controller.results import ExecResult, Status
from forkpoint.controller.stall import StallWatch
from forkpoint.controller.supervisor import Death, DeathKind, Supervisor
from forkpoint.errors import ForkpointError
from forkpoint.protocol import Message
from forkpoint.tree import Checkpoint

__all__ = ["Driver", "HeadState", "Position"]


class HeadState(Enum):
    IDLE = "idle"  # between inputs, holding the state of ``Position.checkpoint``
    RUNNING = "running"  # an input (or a script) runs; ``checkpoint`` is the latest it passed
    POST_MORTEM = "post-mortem"  # a script failed; the head stays in its frames until resume
    PAUSED = "paused"  # a script's head rewound to a checkpoint, waiting there until resume


@dataclass
class Position:
    """Where the head is. Its transitions are its methods."""

    state: HeadState = HeadState.RUNNING  # until checkpoint 0 is taken
    checkpoint: int | None = None
    source: str = ""  # the running input's source: the title of checkpoints taken in it
    history: list[int] = field(default_factory=list)  # where :undo goes, latest last
    skipped: int = 0  # hits of sites that took no checkpoint since ``checkpoint`` (a failed run's)

    @property
    def current(self) -> int:
        return self.checkpoint if self.checkpoint is not None else 0

    def begin(self, source: str) -> int | None:
        """An input starts; the checkpoint it starts from, if the head was idle at one."""
        start = self.checkpoint if self.state is HeadState.IDLE else None
        self.state, self.source = HeadState.RUNNING, source
        return start

    def passed(self, cid: int) -> None:
        self.checkpoint = cid

    def settle(self, state: HeadState, cid: int | None = None) -> None:
        self.state = state
        if cid is not None:
            self.checkpoint = cid

    def remember(self, cid: int | None) -> None:
        """``cid`` is where the head was before a move: undo goes back there."""
        if cid is not None:
            self.history.append(cid)


class Driver:
    def __init__(
        self,
        head: HeadLink,
        pool: CheckpointPool,
        supervisor: Supervisor,
        outbox: Outbox,
        is_script: Callable[[], bool],
    ) -> None:
        self.head = head
        self.pool = pool
        self.position = Position()
        self._supervisor = supervisor
        self._outbox = outbox
        self._is_script = is_script
        self._interrupts = Interrupts()
        self._stall = StallWatch()
        # Run before the head is used (a restored session's check behind a lazy restore).
        self.before_use: Callable[[], None] = lambda: None
        self._inputs = 0

    def _emit(self, event: Event) -> None:
        self._outbox.emit(event)

    # ----------------------------------------------------------------- inputs

    def execute(self, code: str, checkpoint: bool = True) -> ExecResult:
        """Run one input in the head; on success it becomes a new checkpoint (unless not
        ``checkpoint``), else rolled back."""
        self.require_head()
        start = self.position.begin(code)
        self._inputs += 1
        msg = {"op": "exec", "code": code, "filename": f"<input-{self._inputs}>"}
        self.head.send(msg if checkpoint else {**msg, "checkpoint": False})
        result = self.finish()
        if result.status is Status.OK:
            self.position.remember(start)
        return result

    def run(self, msg: Message) -> ExecResult:
        """Have the head run a script (``msg`` is its ``run``)."""
        self.require_head()
        self.position.begin("")
        self.head.send(msg)
        return self.finish()

    def finish(self) -> ExecResult:
        """Wait for the running input's result and settle the head accordingly."""
        interrupts = self._interrupts
        interrupts.reset()
        self._stall.start(self.head.pid, self.head.pools, time.monotonic())
        with counting_sigint(interrupts):
            reply = self.await_reply("result", between=self._while_running)
        position = self.position
        if reply is None:
            death = self.head.bury()
            if self._is_script():  # post-mortem of a script: resume picks where to go on
                position.settle(HeadState.POST_MORTEM)
                return ExecResult(Status.DIED, death=death)
            target = self.roll_back(self.pool.tree.at_rest_base(position.current))
            if interrupts.killed:
                return ExecResult(
                    Status.INTERRUPTED, death=Death(DeathKind.SECOND_INTERRUPT), rolled_back_to=target
                )
            return ExecResult(Status.DIED, death=death, rolled_back_to=target)
        status = Status(reply["status"])
        position.skipped = int(reply.get("skipped") or 0)
        if status in (Status.OK, Status.EXIT):
            position.settle(HeadState.IDLE)
            if status is Status.OK:
                self.pool.enforce_budget(position.current, between_inputs=True)
                return ExecResult(status, checkpoint=position.current)
            return ExecResult(status, exit_code=reply["exit_code"])
        if self._is_script():  # the head stays, in post-mortem (or paused at a checkpoint)
            position.settle(HeadState.PAUSED if status is Status.PAUSED else HeadState.POST_MORTEM)
            return ExecResult(status, traceback=reply["traceback"])
        target = self.roll_back(self.pool.tree.at_rest_base(position.current))
        return ExecResult(status, traceback=reply["traceback"], rolled_back_to=target)

    def _while_running(self) -> None:
        self._on_interrupts()
        if (stalled := self._stall.step(time.monotonic())) is not None:
            self._emit(stalled)

    def _on_interrupts(self) -> None:
        action = self._interrupts.step(time.monotonic())
        pid = self.head.pid
        if action is None or pid is None:
            return
        if action is Action.FORWARD and not self.head.foreground():
            self._supervisor.signal(pid, signal.SIGINT)  # not on our terminal's foreground group
        elif action is Action.WARN:
            self._emit(InterruptIgnored())
        elif action is Action.KILL:
            self._supervisor.kill(pid)

    def await_reply(
        self, op: str, timeout: float | None = None, between: Callable[[], None] | None = None
    ) -> Message | None:
        try:
            return self.head.await_reply(op, timeout, between)
        finally:
            self._outbox.release()

    def request(
        self, msg: Message, op: str, timeout: float | None = None, runs_code: bool = False
    ) -> Message | None:
        """Ask the idle head something; if it turns out dead, replace it and ask once more.
        A request that ``runs_code`` of the user's (a post-mortem input) gets Ctrl-C as an
        input does: the head is interrupted and the reply still read, so that no answer is
        left behind for the next request to take as its own."""
        for _ in range(2):
            self.require_head()
            if self.head.send(msg):
                if runs_code:
                    self._interrupts.reset()
                    with counting_sigint(self._interrupts):
                        reply = self.await_reply(op, timeout, between=self._on_interrupts)
                else:
                    reply = self.await_reply(op, timeout)
                if reply is not None or not self.head.gone or runs_code:
                    return reply
            self.head.gone = True
        return None

    # ----------------------------------------------------------------- moving the head

    def replace_head(
        self,
        target: Checkpoint,
        resume: Message | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> ExecResult | None:
        """Replace the head with a fork of ``target`` (see ``HeadLink.fork_from``); run on if
        it was mid-input. The head is waiting when this is called (the controller is not
        awaiting it), so it can live on until the new one is up."""
        self.head.fork_from(target, resume, os.getpgrp(), meanwhile)
        self.position.passed(target.id)
        if target.at_rest:
            self.position.settle(HeadState.IDLE)
            return None
        self.position.begin(target.source)
        return self.finish()

    def roll_back(self, cid: int) -> int:
        """Put a head back at ``cid`` or, if that checkpoint is gone, the nearest ancestor
        taken between inputs that can still be forked. The head it replaces (one that failed
        an input, or none) is killed once the new one is up, or when none can be."""
        for node in self.pool.tree.chain(cid):
            if not node.usable or not node.at_rest:
                continue
            try:
                self.head.fork_from(node, None, os.getpgrp())
            except ForkpointError:
                continue
            self.position.settle(HeadState.IDLE, node.id)
            return node.id
        self.head.kill(wait=False)
        raise ForkpointError("every checkpoint on this branch is gone; nothing to rewind to.")

    def require_head(self) -> HeadLink:
        """The live head; one that died between inputs is replaced (and said so)."""
        self.before_use()
        if not self.head.present:
            if self.head.pid is not None:
                death = self.head.bury()
                target = self.roll_back(self.position.current)
                self._emit(HeadDied(death, target))
            else:
                self.roll_back(self.position.current)
        return self.head
