"""The terminal's words for what the engine hands it as data: events, deaths, why a resume
could not go on where asked, and hints for the engine's refusals (in this front end's
commands and flags, which the engine never names)."""

from __future__ import annotations

import errno
import os
import signal

from forkpoint.controller import Death, DeathKind
from forkpoint.controller import events as ev
from forkpoint.controller.resume_policy import Blocker, Why
from forkpoint.errors import ForkpointError, Reason

__all__ = [
    "NOTICES",
    "blocker_text",
    "death_text",
    "event_style",
    "event_text",
    "hint",
    "internal_error_text",
]

_WHY_KILLED = {
    int(signal.SIGSEGV): "segmentation fault",
    int(signal.SIGKILL): "killed from outside, for example by the OOM killer",
    int(signal.SIGABRT): "aborted",
    int(signal.SIGBUS): "bus error",
    int(signal.SIGFPE): "arithmetic fault",
}

_HINTS = {
    Reason.NO_SUCH_CHECKPOINT: ":checkpoints lists them",
    Reason.EVICTED: "raise --memory-budget or --max-checkpoints, or label checkpoints to keep them",
    Reason.NOT_SAVED: "rewind to one it holds (:checkpoints lists them)",
    Reason.NO_SCRIPT: "resume follows forkpoint run",
    Reason.NOT_A_SCRIPT_CHECKPOINT: ":checkpoints lists them",
    Reason.SESSION_EXISTS: "add --force to replace it, or choose another name",
}

# Events the terminal shows as notices (in the warning style).
NOTICES = (
    ev.CodeSwapped,
    ev.ThreadsLeftOut,
    ev.UnsafePool,
    ev.StalledInPool,
    ev.CudaInUse,
    ev.NoCheckpoint,
    ev.FilesRewound,
    ev.HeadNotice,
    ev.ConnectionRefused,
    ev.RuntimeDirRefused,
    ev.FilesNotRewound,
    ev.ResumeBlocked,
    ev.LineSiteGone,
    ev.OldCallsRan,
)


def hint(exc: ForkpointError) -> str | None:
    """The error's own hint, or this front end's for its reason."""
    if exc.hint:
        return exc.hint
    return _HINTS.get(exc.reason) if exc.reason is not None else None


def internal_error_text(exc: BaseException, log: str | None, goes_on: bool = True) -> str:
    """One sentence for a bug of forkpoint's met while running a command (in a shell whose
    session ``goes_on``, or a command that ends); a full disk is no bug, and is said as such."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        then = " The session goes on." if goes_on else ""
        return f"forkpoint: no space left on the disk{where}; free some and try again.{then}"
    what = f"{type(exc).__name__}: {exc}"[:300]
    where = f"; the details are in {log}" if log else ""
    then = " The session goes on." if goes_on else ""
    return f"forkpoint: internal error ({what}){where}.{then} Please report it."


def death_text(death: Death | None) -> str:
    """'was killed by SIGSEGV (segmentation fault)', 'exited with status 3', ..."""
    if death is None or death.kind is DeathKind.UNKNOWN:
        return "is gone"
    if death.kind is DeathKind.SECOND_INTERRUPT:
        return "was killed after a second Ctrl-C"
    if death.kind is DeathKind.EXIT:
        return f"exited with status {death.number}"
    sig = death.number or 0
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    why = _WHY_KILLED.get(sig)
    return f"was killed by {name}" + (f" ({why})" if why else "")


def blocker_text(blocker: Blocker) -> str:
    names = blocker.names
    first = names[0] if names else "?"
    why = blocker.why
    if why is Why.GONE_FUNCTION:
        return f"{first}() is not in the new code"
    if why is Why.RECURSION:
        return f"{first}() is also running further out, where its old code would go on"
    if why is Why.EDIT_ABOVE_LINE:
        return f"the edit is above line {blocker.line} in {first}()"
    if why is Why.TOP_LEVEL:
        return "the edit changes top-level code that had run by then"
    if why is Why.MODULE_TOP_LEVEL:
        return f"module {first} changed outside its functions, and it had been imported by then"
    if why is Why.OUTER_CHANGED:
        return f"{first}() is running further out and changed, so it would go on with its old code"
    return f"{', '.join(f + '()' for f in names)} had already run the old code"


def event_text(event: ev.Event) -> str:
    """The sentence for ``event`` (without the ``forkpoint:`` prefix)."""
    match event:
        case ev.Evicted(ids, limit, max_checkpoints, _):
            said = (
                f"--max-checkpoints {max_checkpoints}" if limit is ev.Limit.CHECKPOINTS else "--memory-budget"
            )
            listed = ", ".join(f"[{cid}]" for cid in ids)
            return f"evicted {listed} to stay within {said}; older ones will be thinned out quietly"
        case ev.HeadDied(death, rewound_to):
            return f"the head {death_text(death)}; rewound to [{rewound_to}]"
        case ev.InterruptIgnored():
            return "the input does not stop; press Ctrl-C again to kill the head and roll back"
        case ev.FilesNotRewound(checkpoint, paths):
            verb = "was" if len(paths) == 1 else "were"
            since = f"written since [{checkpoint}]"
            return f"{_files(paths)} {verb} {since}: a rewind puts memory back, not files"
        case ev.RuntimeDirRefused(refused, instead):
            return f"{refused} is not this user's private dir; using {instead} instead."
        case ev.ConnectionRefused(uid, pid):
            return f"refused a connection from uid {uid} (pid {pid})"
        case ev.CodeSwapped(functions):
            return f"new code for {', '.join(functions)}"
        case ev.ThreadsLeftOut(threads, pools):
            inside = (
                f"; if one is inside {' or '.join(pools)} when a checkpoint is taken, a rewound head "
                "may run that library single-threaded or wait in it for good"
                if pools
                else ""
            )
            return (
                f"threads {', '.join(threads)} are running: checkpoints hold only the thread that "
                f"takes them, so a rewound head runs without them{inside}."
            )
        case ev.UnsafePool(pool):
            return (
                f"{pool}'s thread pool is running, and no fork copies it: in a head rewound to this "
                f"checkpoint or a later one, {pool} waits forever at its next call (the rest runs). "
                f"Run the {pool} work in a subprocess (multiprocessing's spawn start method), or "
                "keep its results as numpy or pandas and call it no more after a rewind."
            )
        case ev.StalledInPool(pools, seconds):
            return (
                f"this input has used no CPU for {seconds:.0f} s, in a head that lost "
                f"{' and '.join(pools)}'s thread pool with the fork: it is most likely waiting there "
                "for good. Ctrl-C twice kills the head and rolls back."
            )
        case ev.CudaInUse():
            return (
                "this process has initialised CUDA: a rewound head cannot use CUDA (device memory and "
                "the driver's context are not copied by fork); see docs/architecture.md, 'CUDA'."
            )
        case ev.NoCheckpoint(error):
            return f"no checkpoint after this input: fork failed ({error})."
        case ev.FilesRewound(rewound, kept):
            parts: list[str] = []
            if rewound:
                parts.append(
                    f"{_files(rewound)} cut back to where {'it' if len(rewound) == 1 else 'they'} stood"
                )
            if kept:
                parts.append(
                    f"{_files(kept)} left as {'it is' if len(kept) == 1 else 'they are'}: replaced or "
                    "shortened since the checkpoint, so what follows may differ from a fresh run"
                )
            return "; ".join(parts) + "."
        case ev.HeadNotice(text):
            return text
        case ev.ResumeBlocked(checkpoint, blocker):
            return f"[{checkpoint}] cannot go on with the new code: {blocker_text(blocker)}"
        case ev.LineSiteGone(path, line):
            return f"the checkpoint before line {line} of {os.path.basename(path)} is gone with its statement"
        case ev.Resuming(checkpoint, title, skipped, hits_again):
            again = (
                f"; {hits_again} later {'hit' if hits_again == 1 else 'hits'} of sites took no checkpoint "
                "(spaced out: --checkpoint-every-hit takes them all) and run again"
                if hits_again
                else ""
            )
            return f"resuming from [{checkpoint}] {title}: skips {skipped:.1f} s of work{again}"
        case ev.StartingOver():
            return "no checkpoint can continue the new code; running the script again from the start"
        case ev.OldCallsRan(function, calls, redo_from):
            redo = (
                f"resume --from {redo_from} redoes them"
                if redo_from is not None
                else "run the script again to redo them"
            )
            return f"calls 1-{calls} of {function}() in this statement ran the old code; {redo}"
        case ev.Output(_, text):
            return text
    raise TypeError(f"no words for {event!r}")


def _files(paths: tuple[str, ...]) -> str:
    names = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return f"{'file' if len(paths) == 1 else 'files'} {names}"


def event_style(event: ev.Event) -> str | None:
    if isinstance(event, NOTICES + (ev.InterruptIgnored,)):
        return "warn"
    if isinstance(event, ev.HeadDied):
        return "error"
    if isinstance(event, ev.Evicted):
        return "dim"
    if isinstance(event, ev.Resuming | ev.StartingOver):
        return "info"
    return None
