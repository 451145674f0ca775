"""The shell's ``:`` commands. Each is a function ``(shell, args) -> None`` found by name.

A command's docstring's first line is its help text, so ``:help`` cannot go stale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forkpoint.controller import SaveScope, Status
from forkpoint.errors import ForkpointError
from forkpoint.shell.render import saved_text

if TYPE_CHECKING:
    from forkpoint.shell.repl import Shell

__all__ = ["COMMANDS", "SaveRequest", "dispatch", "parse_save"]


class Quit(Exception):
    """Raised by :quit (or a script that ends after resume); the shell leaves its loop."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.code = code


def _postmortem(shell: Shell, name: str) -> None:
    if not shell.postmortem:
        raise ForkpointError(f"{name} works after a script failed under forkpoint run.")


def cmd_resume(shell: Shell, args: str) -> None:
    """resume [--from ID]      go on with the edited script from the latest checkpoint it can"""
    _postmortem(shell, "resume")
    parts = args.split()
    if parts and (parts[0] != "--from" or len(parts) != 2):
        raise ForkpointError("resume takes no argument but --from ID.", "for example resume --from 4")
    resumed = shell.controller.resume(parts[1] if parts else None)
    shell.frame = 0
    result = resumed.result
    if result.status is Status.EXIT:
        raise Quit(result.exit_code or 0)
    shell.render.result(result)


def _move(shell: Shell, step: int) -> None:
    _postmortem(shell, "up and down")
    ok, text = shell.controller.frame(shell.frame + step)
    if not ok:
        raise ForkpointError("that is the " + ("outermost" if step > 0 else "innermost") + " frame.")
    shell.frame += step
    shell.render.line(text.rstrip("\n"), "info")


def cmd_up(shell: Shell, args: str) -> None:
    """up / down / where       move out / in along the failing stack, or show the frame"""
    _move(shell, 1)


def cmd_down(shell: Shell, args: str) -> None:
    """down                    move one frame in, towards where the exception was raised"""
    _move(shell, -1)


def cmd_where(shell: Shell, args: str) -> None:
    """where                   the frame that inputs are evaluated in"""
    _move(shell, 0)


def cmd_checkpoints(shell: Shell, args: str) -> None:
    """:checkpoints            list live checkpoints: id, parent, label, age, memory, input"""
    shell.render.checkpoints(shell.controller.checkpoints(), shell.controller.current)


def cmd_tree(shell: Shell, args: str) -> None:
    """:tree                   show the checkpoint tree and where the head is"""
    shell.render.tree(shell.controller.view())


def cmd_rewind(shell: Shell, args: str) -> None:
    """:rewind ID|LABEL|-N     go back to a checkpoint (-N: N steps up the current branch)"""
    if not args:
        raise ForkpointError(
            ":rewind needs a checkpoint.", "for example :rewind 3, :rewind -1 or :rewind LABEL"
        )
    shell.show_rewind(shell.controller.rewind(args))


def cmd_undo(shell: Shell, args: str) -> None:
    """:undo                   go back to where the head was before the last input or rewind"""
    shell.show_rewind(shell.controller.undo())


def cmd_label(shell: Shell, args: str) -> None:
    """:label NAME [ID]        name a checkpoint (the current one by default)"""
    parts = args.split()
    if not parts or len(parts) > 2:
        raise ForkpointError(":label needs a name.", "for example :label loaded")
    node = shell.controller.label(parts[0], parts[1] if len(parts) > 1 else None)
    shell.render.line(f"labelled [{node.id}] {node.label!r}", "info")


def cmd_diff(shell: Shell, args: str) -> None:
    """:diff A [B]             names whose values differ between A and B (B: the current one)"""
    parts = args.split()
    if not 1 <= len(parts) <= 2:
        raise ForkpointError(":diff needs one or two checkpoints.", "for example :diff 2 5")
    a = shell.controller.find(parts[0]).id
    b = shell.controller.find(parts[1]).id if len(parts) > 1 else shell.controller.current
    shell.render.diff(a, b, shell.controller.diff(a, b))


def cmd_mem(shell: Shell, args: str) -> None:
    """:mem                    memory of the head and of what checkpoints hold, and the budget"""
    shell.render.memory(shell.controller.memory(), shell.controller.current)


def cmd_save(shell: Shell, args: str) -> None:
    """:save NAME [ID]         save this checkpoint and its branch (--all, --only, --disk SIZE, --force)"""
    request = parse_save(args.split(), ":save")
    saved = shell.controller.save(
        request.name,
        request.ref,
        shell.render.progress,
        replace=request.force,
        scope=request.scope,
        disk_budget=request.disk,
    )
    shell.render.line(saved_text(saved), "info")


@dataclass(frozen=True)
class SaveRequest:
    name: str
    ref: str | None
    force: bool
    scope: SaveScope
    disk: int | None  # bytes the session may take on disk (the checkpoint and labelled ones always)


def parse_save(words: list[str], command: str) -> SaveRequest:
    """``NAME [ID] [--force] [--all|--only] [--disk SIZE]``, for the shell's :save and the
    notebook's %save."""
    from forkpoint.cli import parse_size

    scopes = {"--all": SaveScope.ALL, "--only": SaveScope.ONLY}
    chosen = [scopes[w] for w in words if w in scopes]
    if len(chosen) > 1:
        raise ForkpointError(f"{command} takes --all or --only, not both.")
    disk = None
    if "--disk" in words:
        at = words.index("--disk")
        if at + 1 >= len(words):
            raise ForkpointError(f"{command} --disk needs a size.", "for example --disk 2G")
        disk = parse_size(words[at + 1])
        words = words[:at] + words[at + 2 :]
    parts = [w for w in words if w != "--force" and w not in scopes]
    unknown = [w for w in parts if w.startswith("--")]
    if unknown:
        raise ForkpointError(
            f"{command} has no option {unknown[0]}.", "options: --force, --all, --only, --disk SIZE"
        )
    if not 1 <= len(parts) <= 2:
        raise ForkpointError(
            f"{command} needs a name.", f"for example {command} nightly, or {command} nightly 3"
        )
    ref = parts[1] if len(parts) > 1 else None
    return SaveRequest(parts[0], ref, "--force" in words, chosen[0] if chosen else SaveScope.BRANCH, disk)


def cmd_sessions(shell: Shell, args: str) -> None:
    """:sessions               list saved sessions (forkpoint restore NAME brings one back)"""
    from forkpoint.persist.store import list_sessions

    shell.render.sessions(list_sessions())


def cmd_help(shell: Shell, args: str) -> None:
    """:help                   this list"""
    shell.render.line("Every input that succeeds becomes a checkpoint; one that fails is rolled back.")
    for name, func in dict.fromkeys(COMMANDS.items()):
        if name in POSTMORTEM_ONLY and not shell.postmortem or func in (cmd_down, cmd_where):
            continue
        line = (func.__doc__ or "").strip().splitlines()[0]
        if line.startswith(":") or shell.postmortem:
            shell.render.line("  " + line)


def cmd_quit(shell: Shell, args: str) -> None:
    """:quit                   leave; every forkpoint process ends (Ctrl-D does the same)"""
    raise Quit


COMMANDS: dict[str, Callable[[Shell, str], None]] = {
    "checkpoints": cmd_checkpoints,
    "cps": cmd_checkpoints,
    "tree": cmd_tree,
    "rewind": cmd_rewind,
    "undo": cmd_undo,
    "label": cmd_label,
    "diff": cmd_diff,
    "mem": cmd_mem,
    "save": cmd_save,
    "sessions": cmd_sessions,
    "help": cmd_help,
    "quit": cmd_quit,
    "q": cmd_quit,
    "resume": cmd_resume,
    "up": cmd_up,
    "down": cmd_down,
    "where": cmd_where,
}
POSTMORTEM_ONLY = {"resume", "up", "down", "where"}
# In post-mortem these are typed as bare words too, as in pdb.
POSTMORTEM_WORDS = POSTMORTEM_ONLY | {"rewind"}


def dispatch(shell: Shell, line: str) -> None:
    name, _, args = line.strip()[1:].partition(" ")
    func = COMMANDS.get(name)
    if func is None:
        raise ForkpointError(f"there is no command :{name}.", ":help lists them")
    func(shell, args.strip())
