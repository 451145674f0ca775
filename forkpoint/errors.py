"""The one user-facing error type, and the error policy.

Policy (kept everywhere in forkpoint):

* ``ForkpointError`` is what a user can act on: one sentence saying what went wrong, an
  optional hint saying how to fix it, and the exit code the CLI uses for it.
* Errors in *user code* are not exceptions in forkpoint: the head reports them as data
  (status ``error`` with the formatted traceback) and the front end renders them.
* Everything else is an internal error: a real exception that propagates up to the CLI or
  shell boundary, which prints "internal error", the traceback and where the logs are.
* A forkpoint exception never unwinds through user frames: the agent catches its own
  failures and exits the forked child instead.
* The engine's sentences name no front end's commands or flags: where the fix is a command,
  the error carries a ``Reason`` and each front end gives the hint in its own words.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ForkpointError", "ProtocolError", "Reason"]


class Reason(Enum):
    """What kind of refusal an engine error is, for front ends that hint at their own fix."""

    NO_SUCH_CHECKPOINT = "no such checkpoint"
    EVICTED = "evicted"
    NOT_SAVED = "not saved"
    NO_SCRIPT = "no script"
    NOT_A_SCRIPT_CHECKPOINT = "not a script checkpoint"
    SESSION_EXISTS = "session exists"


class ForkpointError(Exception):
    """Something the user asked for cannot be done; the message says what and why."""

    def __init__(
        self, message: str, hint: str | None = None, exit_code: int = 2, reason: Reason | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
        self.reason = reason

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ProtocolError(Exception):
    """A peer sent a message that breaks the protocol: an internal error, never user-facing."""
