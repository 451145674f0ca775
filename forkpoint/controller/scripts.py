"""The script verbs: run a script with checkpoints, inspect its failure, resume it after an
edit. Which checkpoint a resume goes on from is ``resume_policy``'s (a pure function); this
part carries the choice out and says what it did as events."""

from __future__ import annotations

import ast
import itertools
import os
import time
from collections.abc import Mapping, Sequence

from forkpoint.controller.driver import Driver
from forkpoint.controller.events import (
    LineSiteGone,
    OldCallsRan,
    Outbox,
    ResumeBlocked,
    Resuming,
    StartingOver,
)
from forkpoint.controller.results import ExecResult, Resumed, Status
from forkpoint.controller.resume_policy import ResumeCheck, choose_resume, old_calls
from forkpoint.controller.script import Script, check_syntax, read_script
from forkpoint.errors import ForkpointError, Reason
from forkpoint.instrument.lines import follow_line
from forkpoint.protocol import INLINE_PATH, Message
from forkpoint.tree import Checkpoint

__all__ = ["ScriptVerbs"]


class ScriptVerbs:
    def __init__(self, driver: Driver, outbox: Outbox) -> None:
        self._driver = driver
        self._outbox = outbox
        self.script: Script | None = None
        self._stop_in_tests = False
        self._every_hit = False

    def on_module(self, msg: Message) -> None:
        """The head imported a user module: keep its exact source (the head's ``module``)."""
        if self.script is not None:
            self.script.imported(str(msg["name"]), str(msg["path"]), str(msg["source"]))

    def run(
        self,
        path: str,
        argv: list[str],
        entries: tuple[str, ...] = (),
        lines: Mapping[str, Sequence[int]] | Sequence[int] = (),
        watch: Sequence[str] = (),
        module: str | None = None,
        code: str | None = None,
        stop_in_tests: bool = False,
        every_hit: bool = False,
    ) -> ExecResult:
        self._stop_in_tests, self._every_hit = stop_in_tests, every_hit
        if code is not None:  # python -c: no file, so nothing to edit and resume
            typed, path, source = "-c", INLINE_PATH, code
        else:
            typed, path = path, os.path.abspath(path)
            # Checked only if the run fails: the head compiles it anyway, and a parse here
            # first (a fifth of a second for a 9,000-line module) would only delay it.
            source = read_script(path, check=False)
            if module is not None:
                typed = path  # python -m puts the module's full path in sys.argv[0]
        if not isinstance(lines, Mapping):
            lines = {path: list(lines)} if lines else {}
        by_path = {os.path.abspath(p): list(ns) for p, ns in lines.items()}
        watched = [os.path.abspath(w) for w in watch]
        self.script = Script(path, list(argv), [source], time.time(), list(entries), by_path, watched)
        self.script.argv0, self.script.module = typed, module or ""
        result = self._start()
        if result.status is not Status.EXIT and code is None:
            check_syntax(path, source)  # a syntax error is said in one sentence, not as a death
        return result

    def _start(self) -> ExecResult:
        script = self.script
        assert script is not None
        msg = {
            "op": "run",
            "path": script.path,
            "source": script.versions[-1],
            "argv": script.argv,
            "entries": script.entries,
            "lines": script.lines,
            "watch": script.watch,
            "argv0": script.argv0 or None,
            "module": script.module or None,
            "stop_in_tests": self._stop_in_tests,
            "every_hit": self._every_hit,
        }
        return self._driver.run(msg)

    def ended(self) -> int:
        """After the script ran to its end: inputs from now on are a shell's, in the script's
        namespace, starting from a checkpoint of the finished script (``python -i``)."""
        self.script = None
        result = self._driver.execute("")
        if result.status is not Status.OK or result.checkpoint is None:
            raise ForkpointError("the script's process did not take inputs after it ended.")
        return result.checkpoint

    def resume(self, ref: str | None = None) -> Resumed:
        """Continue the failed script with the files' new code from the latest checkpoint that
        the new code can continue (or ``ref``)."""
        script = self.script
        if script is None:
            raise ForkpointError("there is no script to resume.", reason=Reason.NO_SCRIPT)
        if script.path == INLINE_PATH:
            raise ForkpointError("the program was given with -c: there is no file to edit and resume.")
        driver = self._driver
        tree, current = driver.pool.tree, driver.position.current
        new = read_script(script.path)
        modules = script.edited_modules()
        if ref:
            node = tree.resolve(ref, current)
        else:
            choice = choose_resume(tree, current, ResumeCheck(script, new, modules))
            node = choice.node
            if choice.blocked is not None:
                self._outbox.emit(ResumeBlocked(*choice.blocked))
        if node.id != 0 and node.site is None:
            raise ForkpointError(
                f"[{node.id}] is not a checkpoint of the script.", reason=Reason.NOT_A_SCRIPT_CHECKPOINT
            )
        skipped = max(0.0, node.created - script.started) if node.id else 0.0
        for path, line in script.follow_lines(new, modules):
            self._outbox.emit(LineSiteGone(path, line))
        script.new_version(new, {**script.module_versions[-1], **modules})
        if node.id == 0:  # nothing can be kept: run the new script from the start
            driver.head.kill(wait=False)
            driver.roll_back(0)
            script.started = time.time()
            self._outbox.emit(StartingOver())
            return Resumed(0, "the start", 0.0, self._start())
        directive = {
            "path": script.path,
            "source": new,
            "start": int(node.site or 0) + 1,
            "lines": script.lines,
            "modules": modules,
        }
        where = _where_now(script, node)
        since = itertools.takewhile(lambda n: n.id != node.id, tree.chain(driver.position.current))
        again = driver.position.skipped + sum(n.skipped for n in since)  # hits that took no checkpoint
        self._outbox.emit(Resuming(node.id, where if node.entry else f"after {where}", skipped, again))
        if node.entry and (calls := old_calls(tree, node)) is not None:
            self._outbox.emit(OldCallsRan(calls.function, calls.calls, calls.redo_from))
        result = driver.replace_head(node, resume=directive)
        assert result is not None
        return Resumed(node.id, where, skipped, result)

    def pm_exec(self, code: str, frame: int) -> tuple[bool, str]:
        """Run an input in frame ``frame`` of the failure (0: where it was raised)."""
        reply = self._driver.request({"op": "pm_exec", "code": code, "frame": frame}, "value", runs_code=True)
        if reply is None:
            raise ForkpointError("the script's process is gone; resume to go on.")
        return bool(reply["ok"]), str(reply["text"])

    def frame(self, index: int) -> tuple[bool, str]:
        """Where frame ``index`` of the failure is (False, count) when there is none."""
        reply = self._driver.request({"op": "frame", "index": index}, "value")
        if reply is None:
            raise ForkpointError("the script's process is gone; resume to go on.")
        return bool(reply["ok"]), str(reply["text"])


def _where_now(script: Script, node: Checkpoint) -> str:
    """What ``node`` follows, in the numbering of the newest version (the file as edited):
    the statement it follows moved with the edit, and the user reads the file as it is now."""
    assert node.site is not None and node.version is not None
    if node.entry is None:
        return script.describe(node.site)
    if node.line is None:
        return script.describe_call(node.entry, node.call, None)
    _, old = script.source_of(node.entry, node.version)
    _, new = script.source_of(node.entry, len(script.versions) - 1)
    moved = follow_line(ast.parse(old), ast.parse(new), node.line) if old and new else None
    return script.describe_call(node.entry, node.call, moved or node.line)
