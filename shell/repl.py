"""``forkpoint shell``: a prompt_toolkit Python REPL whose every input is a checkpoint.

The shell owns the terminal while the user types; while an input runs, the head owns it
(the shell only waits), so the input's output, ``input()`` and Ctrl-C go straight to the
user's code.
"""

from __future__ import annotations

import codeop
import os
import re
import warnings
from collections.abc import Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.lexers import PygmentsLexer
from pygments.lexers.python import PythonLexer

from forkpoint import __version__, errlog, paths
from forkpoint.agent.namespace import completion_token
from forkpoint.channel import private_dir
from forkpoint.controller import Controller, ExecResult, Rewound, Status
from forkpoint.errors import ForkpointError
from forkpoint.shell.commands import POSTMORTEM_WORDS, Quit, dispatch
from forkpoint.shell.messages import internal_error_text
from forkpoint.shell.render import Renderer

__all__ = ["Shell", "input_is_complete", "next_indent"]

_DEDENT = re.compile(r"^\s*(return|pass|break|continue|raise)\b")


def input_is_complete(text: str) -> bool:
    """Whether Enter should run ``text`` (True) or open a new line (False)."""
    if not text.strip() or text.lstrip().startswith(":"):
        return True
    lines = text.split("\n")
    if len(lines) > 1 and not lines[-1].strip():
        return True  # a blank line ends a block, as in the standard REPL
    if lines[-1][:1] in (" ", "\t"):
        return False  # still inside a block
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return codeop.compile_command(text, "<input>", "exec") is not None
    except (SyntaxError, OverflowError, ValueError):
        return True  # let the head report the error with a proper traceback


def next_indent(line: str) -> str:
    """Indentation for the line after ``line``."""
    indent = line[: len(line) - len(line.lstrip())]
    code = line.split("#", 1)[0].rstrip()
    if code.endswith(":"):
        return indent + "    "
    if _DEDENT.match(line):
        return indent[:-4] if indent.endswith("    ") else indent[:-1]
    return indent


class HeadCompleter(Completer):
    """Tab completion from the head's live namespace."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        token = completion_token(text)
        try:
            items = self.controller.complete(text)
        except ForkpointError:
            return
        for item in items:
            yield Completion(item, start_position=-len(token))


def _key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        buf = event.current_buffer
        doc = buf.document
        if buf.complete_state and buf.complete_state.current_completion:
            buf.apply_completion(buf.complete_state.current_completion)
            return
        if doc.is_cursor_at_the_end and input_is_complete(buf.text):
            if len(buf.text.split("\n")) > 1 and not doc.current_line.strip():
                buf.text = buf.text.rstrip() + "\n"
            buf.validate_and_handle()
            return
        buf.insert_text("\n" + next_indent(doc.current_line_before_cursor))

    @kb.add(Keys.Vt100MouseEvent)
    def _mouse(event: KeyPressEvent) -> None:
        """The shell asks for no mouse reports, so what parses as one was typed (a raw
        ``ESC[31m``): ignored, where prompt_toolkit's own handler would fail on it."""

    @kb.add("c-z")
    def _suspend(event: KeyPressEvent) -> None:
        """Ctrl-Z suspends the shell as other shells do (fg brings it back); the head and the
        checkpoints stop with it or, parked in groups of their own, simply wait."""
        event.app.suspend_to_background()

    @kb.add("tab")
    def _tab(event: KeyPressEvent) -> None:
        buf = event.current_buffer
        if not buf.document.current_line_before_cursor.strip():
            buf.insert_text("    ")
        elif buf.complete_state:
            buf.complete_next()
        else:
            buf.start_completion(select_first=False, insert_common_part=True)

    return kb


def _history() -> History:
    try:
        path = os.path.join(private_dir(paths.state_dir()), "history")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # what was typed may hold secrets, whatever the umask
        os.close(fd)
        return FileHistory(path)
    except OSError:
        return InMemoryHistory()


def _is_command(text: str) -> bool:
    """In post-mortem, ``up`` or ``rewind 3`` is a command, but ``where = 3`` or ``up(1)`` is
    Python: a line is a command when it is the word alone, or the word with arguments that
    make no Python."""
    words = text.split()
    if not words or words[0] not in POSTMORTEM_WORDS:
        return False
    if len(words) == 1:
        return True
    try:
        compile(text, "<post-mortem>", "exec")
    except SyntaxError:
        return True
    return False


class Shell:
    """The REPL loop around a started controller."""

    def __init__(self, controller: Controller, render: Renderer, postmortem: bool = False) -> None:
        self.controller = controller
        self.render = render
        self.postmortem = postmortem  # after a script failed: inputs run in a frame of the failure
        self.frame = 0
        self.session: PromptSession[str] = PromptSession(
            lexer=PygmentsLexer(PythonLexer),
            multiline=True,
            key_bindings=_key_bindings(),
            history=_history(),
            completer=HeadCompleter(controller),
            complete_while_typing=False,
            prompt_continuation=self._continuation,
            enable_history_search=False,
        )

    def _prompt(self) -> str:
        return f"[{self.controller.current}]{'pm' if self.postmortem else ''}>>> "

    def _continuation(self, width: int, line_number: int, is_soft_wrap: int) -> str:
        return "." * (width - 1) + " "

    def run(self) -> int:
        """Read and run inputs until :quit, Ctrl-D or exit(); returns the exit code."""
        if self.postmortem:
            banner = (
                "post-mortem: inputs run in the failing frame (up/down move); edit the file, then type resume"
            )
        else:
            banner = (
                f"forkpoint {__version__}: every input is a checkpoint; :help lists commands, Ctrl-D quits."
            )
        self.render.line(banner, "dim")
        while True:
            try:
                text = self.session.prompt(self._prompt())
            except KeyboardInterrupt:
                continue
            except EOFError:
                return 0
            except Exception as exc:  # the line editor met what it could not take
                self.render.line(internal_error_text(exc, errlog.record(exc, "reading an input")), "error")
                continue
            try:
                code = self.handle(text)
            except Quit as stop:
                return stop.code
            except ForkpointError as exc:
                self.render.error(exc)
                continue
            except KeyboardInterrupt:  # in a command: that command is cancelled, nothing else
                self.render.line("interrupted; the session goes on.", "warn")
                continue
            except Exception as exc:  # a bug of ours: say so in one sentence, keep the session
                self.render.line(
                    internal_error_text(exc, errlog.record(exc, f"running {text[:200]!r}")), "error"
                )
                continue
            if code is not None:
                return code

    def handle(self, text: str) -> int | None:
        """Run one input or command; an exit code when the shell should end."""
        if not text.strip():
            return None
        if text.lstrip().startswith(":"):
            dispatch(self, text)
            return None
        if self.postmortem:
            if _is_command(text):
                dispatch(self, ":" + text.strip())
                return None
            ok, error = self.controller.pm_exec(text, self.frame)
            if not ok:
                self.render.line(error.rstrip("\n"), "error")
            return None
        result = self.controller.execute(text)
        return self.show_result(result)

    def show_result(self, result: ExecResult) -> int | None:
        if result.status is Status.EXIT:
            return result.exit_code or 0
        self.render.result(result)
        return None

    def show_rewind(self, rewound: Rewound) -> None:
        self.render.line(f"rewound to [{rewound.checkpoint}]", "info")
        if rewound.continued is not None and rewound.continued.status is Status.PAUSED:
            self.frame = 0
            title = self.controller.view()[rewound.checkpoint].title
            self.render.line(
                f"paused {title}; inputs run there (up/down move), resume goes on from here", "info"
            )
        elif rewound.continued is not None:
            self.show_result(rewound.continued)
