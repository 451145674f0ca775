"""A real pseudo-terminal running ``forkpoint shell``, for tests: type, wait, read the screen text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect

FRESH_PROMPT = re.compile(r"\[(\d+)\](?:pm)?>>>\x1b\[")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")
_LEFTOVER = re.compile(r"^\d+[A-Za-z]")  # the tail of an escape cut by the previous match
TIMEOUT = 30


def clean(text: str) -> str:
    return ANSI.sub("", text)


class Terminal:
    """One forkpoint process in a pty of fixed size; ``transcript`` keeps everything it printed."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: str | None = None, exe: str | None = None
    ) -> None:
        exe = exe or str(Path(sys.executable).with_name("forkpoint"))
        self.transcript: list[str] = []
        self.child = pexpect.spawn(
            exe,
            args,
            env=env,
            cwd=cwd,
            encoding="utf-8",
            dimensions=(50, 200),
            timeout=TIMEOUT,
            codec_errors="replace",
        )
        self.child.logfile_read = _Log(self.transcript)
        self.current = -1

    @property
    def pid(self) -> int:
        return int(self.child.pid)

    def wait_prompt(self, timeout: float = TIMEOUT) -> str:
        """Wait for an empty prompt; return the text printed before it."""
        self.child.expect(FRESH_PROMPT, timeout=timeout)
        self.current = int(self.child.match.group(1))
        return _LEFTOVER.sub("", clean(self.child.before))

    def run(self, line: str, timeout: float = TIMEOUT) -> str:
        """Type a line and Enter; return what appeared up to the next prompt, minus the echo."""
        self.child.send(line + "\r")
        out = self.wait_prompt(timeout)
        return _strip_echo(out, line)

    def paste(self, text: str, timeout: float = TIMEOUT) -> str:
        """Paste a block (bracketed paste, as terminals do), then Enter."""
        self.child.send("\x1b[200~" + text + "\x1b[201~")
        self.child.send("\r")
        return self.wait_prompt(timeout)

    def finish(self, line: str, timeout: float = TIMEOUT) -> str:
        """Type a line that should end the program (``resume``, ``:quit``); wait for it to exit
        and return everything it printed."""
        self.child.send(line + "\r")
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.wait()
        return self.text()

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> str:
        self.child.expect(pattern, timeout=timeout)
        return clean(self.child.before + self.child.after)

    def wait_screen(self, text: str, timeout: float = TIMEOUT) -> None:
        """Wait until ``text`` shows, escapes aside: a redraw may split a word in pieces
        (prompt_toolkit drew what was typed, then the completion after it)."""
        start = len(self.transcript)
        deadline = time.monotonic() + timeout
        while text not in clean("".join(self.transcript[start:])):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not show in {timeout} s")
            self.child.expect([pexpect.TIMEOUT], timeout=0.05)

    def text(self) -> str:
        return clean("".join(self.transcript))

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close(force=True)


def _strip_echo(out: str, line: str) -> str:
    lines = out.split("\n")
    if lines and line.strip() and line.strip() in lines[0]:
        lines = lines[1:]
    return "\n".join(lines)


class _Log:
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def write(self, data: str) -> None:
        self.sink.append(data)

    def flush(self) -> None:
        pass


def env_for(tmp: Path, marker: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PROMPT_TOOLKIT_NO_CPR="1",
        NO_COLOR="1",
        TERM="xterm",
        XDG_RUNTIME_DIR=str(tmp / "run"),
        XDG_STATE_HOME=str(tmp / "state"),
        XDG_DATA_HOME=str(tmp / "data"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        FORKPOINT_TEST_MARKER=marker,
    )
    (tmp / "run").mkdir(mode=0o700, exist_ok=True)
    return env


def command(tmp: Path, marker: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A command with no terminal (stdin /dev/null), in ``tmp`` with the test's own dirs."""
    return subprocess.run(
        list(argv),
        env=env_for(tmp, marker),
        cwd=tmp,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
