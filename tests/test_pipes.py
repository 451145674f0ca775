"""Pipes mode: the head's stdout and stderr come back as the engine's Output events, in order
with its other events; no terminal anywhere (what a notebook kernel needs)."""

from __future__ import annotations

from pathlib import Path

from forkpoint.controller import Controller, Output, Status
from forkpoint.controller import events as ev

SCRIPT = """\
import sys

def report(x):
    print("report", x)

print("start")
print("to stderr", file=sys.stderr)
x = 21
print("x", x, flush=True)
y = x * 2
report(y)
raise ValueError("bug")
print("end")
"""


def outputs(events: list[ev.Event]) -> list[tuple[str, str]]:
    """Output events as (stream, text), consecutive writes to one stream joined (a head may
    write a line in pieces)."""
    merged: list[tuple[str, str]] = []
    for e in events:
        if isinstance(e, ev.Output):
            if merged and merged[-1][0] == e.stream.value:
                merged[-1] = (e.stream.value, merged[-1][1] + e.text)
            else:
                merged.append((e.stream.value, e.text))
    return merged


def joined(events: list[ev.Event], stream: ev.Stream) -> str:
    return "".join(e.text for e in events if isinstance(e, ev.Output) and e.stream is stream)


def test_a_run_fail_edit_resume_cycle_in_pipes_mode(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    events: list[ev.Event] = []
    with Controller(output=Output.PIPES, on_event=events.append) as c:
        result = c.run_script(str(script), [])
        assert result.status is Status.ERROR
        assert result.traceback is not None and "ValueError: bug" in result.traceback
        assert joined(events, ev.Stream.STDOUT) == "start\nx 21\nreport 42\n"
        assert joined(events, ev.Stream.STDERR) == "to stderr\n"

        events.clear()
        script.write_text(
            SCRIPT.replace('raise ValueError("bug")', "report(y + 1)").replace('"report"', '"REPORT"')
        )
        resumed = c.resume()
        assert resumed.result.status is Status.EXIT and resumed.result.exit_code == 0
        kinds = [type(e) for e in events]
        # The resume is told first, then the new code is announced, then what it printed.
        assert kinds.index(ev.Resuming) < kinds.index(ev.CodeSwapped) < kinds.index(ev.Output)
        # report() had run the old code, so the resume goes on from before its first call.
        assert outputs(events) == [("stdout", "REPORT 42\nREPORT 43\nend\n")]


def test_output_of_an_input_is_emitted_before_it_returns(tmp_path: Path) -> None:
    events: list[ev.Event] = []
    with Controller(output=Output.PIPES, on_event=events.append) as c:
        code = (
            "import sys\n"
            "for i in range(3):\n"
            "    print(i, flush=True); print('e', i, file=sys.stderr, flush=True)"
        )
        assert c.execute(code).status is Status.OK
        # Each stream in order, all of it there when execute returns. (stdout and stderr are two
        # pipes: their relative order is not kept, as with any subprocess or Jupyter kernel.)
        assert joined(events, ev.Stream.STDOUT) == "0\n1\n2\n"
        assert joined(events, ev.Stream.STDERR) == "e 0\ne 1\ne 2\n"
        events.clear()
        assert c.execute("'x' * 3").status is Status.OK  # an expression echoes on stdout
        assert joined(events, ev.Stream.STDOUT) == "'xxx'\n"


def test_output_survives_rewinds_and_big_writes(tmp_path: Path) -> None:
    events: list[ev.Event] = []
    with Controller(output=Output.PIPES, on_event=events.append) as c:
        base = c.execute("n = 0").checkpoint
        assert base is not None
        c.execute("n += 1")
        c.rewind(base)  # the new head writes to the same pipes
        events.clear()
        assert c.execute("print(n); print('z' * 300_000)").status is Status.OK
        assert joined(events, ev.Stream.STDOUT) == "0\n" + "z" * 300_000 + "\n"
        events.clear()
        result = c.execute("print('half'); 1/0")
        assert result.status is Status.ERROR and result.rolled_back_to is not None
        assert joined(events, ev.Stream.STDOUT) == "half\n"
        assert c.evaluate("n") == (True, "0")
