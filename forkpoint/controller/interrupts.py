"""Ctrl-C while an input runs, as a state machine.

The terminal sends SIGINT to its whole foreground group, head and controller alike; the head
turns it into KeyboardInterrupt in user code. The controller only counts presses (its signal
handler does nothing else) and, between waits for the head, asks the machine what to do:
pass the first press on to a head outside the terminal's foreground group (a restored one),
say after a second that the input does not stop, and kill the head on a second press.

``Interrupts`` is pure (time is passed in), so its transitions are tested without signals.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

__all__ = ["Action", "Interrupts", "Stage", "counting_sigint", "remembered_sigint"]

PATIENCE = 1.0  # seconds after the first Ctrl-C before the user is told the input does not stop


class Stage(Enum):
    QUIET = "quiet"  # no Ctrl-C during this input
    ASKED = "asked"  # one Ctrl-C: the head was asked to stop
    WARNED = "warned"  # ... and the user was told it did not
    KILLING = "killing"  # a second Ctrl-C: the head is killed and the input rolled back


class Action(Enum):
    FORWARD = "forward"  # pass SIGINT on to the head if the terminal did not reach it
    WARN = "warn"  # tell the user the input does not stop
    KILL = "kill"  # kill the head


@dataclass
class Interrupts:
    """Presses counted by the signal handler; ``step`` says what the presses since the last
    step, or the time since, call for."""

    stage: Stage = Stage.QUIET
    presses: int = 0  # written by the signal handler only
    handled: int = 0
    asked_at: float = 0.0

    def reset(self) -> None:
        """A new input starts."""
        self.stage, self.presses, self.handled, self.asked_at = Stage.QUIET, 0, 0, 0.0

    def press(self) -> None:
        self.presses += 1

    @property
    def killed(self) -> bool:
        """Whether a second Ctrl-C came: a head that died now was killed for it."""
        return self.presses >= 2

    def step(self, now: float) -> Action | None:
        if self.presses > self.handled:
            self.handled = self.presses
            if self.presses == 1:
                self.stage, self.asked_at = Stage.ASKED, now
                return Action.FORWARD
            self.stage = Stage.KILLING
            return Action.KILL
        if self.stage is Stage.ASKED and now - self.asked_at > PATIENCE:
            self.stage = Stage.WARNED
            return Action.WARN
        return None


@contextlib.contextmanager
def counting_sigint(interrupts: Interrupts) -> Iterator[None]:
    """While an input runs, Ctrl-C is the head's: the controller only counts it. (Signal
    handlers can only be set on the main thread; elsewhere Ctrl-C is not ours to see.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def count(signum: int, frame: object) -> None:
        interrupts.press()

    previous = signal.signal(signal.SIGINT, count)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def remembered_sigint() -> Iterator[list[int]]:
    """Ctrl-C cancels what runs in the block (a save) and is also remembered: Python raises it
    wherever the main thread is, and one raised inside a finalizer (an asyncio loop collected
    just then) is printed and dropped. The block checks the list before it commits. Only where
    Python's own handler is in place, on the main thread (a host's own handling stays)."""
    pressed: list[int] = []
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield pressed
        return

    def press(signum: int, frame: object) -> None:
        pressed.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, press)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
