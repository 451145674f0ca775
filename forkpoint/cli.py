"""The ``forkpoint`` command: subcommands, and the boundary where errors become exit codes.

``ForkpointError`` prints its one sentence (and hint) and exits with its code; any other
exception is an internal error: one sentence naming the log that holds its traceback, exit 70.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from forkpoint import __version__
from forkpoint.errors import ForkpointError

if TYPE_CHECKING:
    from forkpoint.controller import Controller
    from forkpoint.shell.render import Renderer

__all__ = ["main", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b|%)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, total: int | None = None) -> int:
    """'4G', '512M', '1.5GiB', '25%' (of ``total``) -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ForkpointError(f"{text!r} is not a size.", "write it like 4G, 512M or 25%")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    if unit == "%":
        if total is None:
            raise ForkpointError(f"{text!r}: a percentage is not allowed here.")
        return int(total * number / 100)
    return int(number * _UNITS[unit[:1]])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forkpoint", description="Rewind a live Python process, edit, continue."
    )
    parser.add_argument("--version", action="version", version=f"forkpoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shell = sub.add_parser("shell", help="a Python REPL whose every input is a checkpoint")
    shell.set_defaults(func=_cmd_shell)
    run = sub.add_parser(
        "run",
        help="run a script with a checkpoint after each top-level statement; resume it after an edit",
        usage="forkpoint run [OPTIONS] (script.py | -m MODULE | -c CODE) [OPTIONS] [-- SCRIPT_ARGS...]",
    )
    run.add_argument("script", nargs="?", help="the Python script to run")
    run.add_argument(
        "-m",
        dest="module",
        metavar="MODULE",
        help="run a module as python -m does (the current folder's); the words after it are its own",
    )
    run.add_argument(
        "-c", dest="code", metavar="CODE", help="run a program given as a string, as python -c does"
    )
    run.add_argument(
        "--checkpoint-at",
        action="append",
        default=[],
        metavar="FUNC|FILE:LINE",
        help="checkpoint at the entry of each call of FUNC (name, Class.method, module:func), or before "
        "the statement on FILE:LINE, also inside functions; repeatable",
    )
    run.add_argument(
        "--checkpoint-every-hit",
        action="store_true",
        help="checkpoint at every hit of those sites (by default a hit soon after the last checkpoint is "
        "skipped, so that checkpoints cost at most about 5%% of the run)",
    )
    run.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="PATH",
        help="also instrument the modules under PATH (the script's folder always is); repeatable",
    )
    run.add_argument(
        "-i",
        dest="interactive",
        action="store_true",
        help="open the shell in the script's namespace when it ends, as python -i does",
    )
    resume = sub.add_parser("resume", help="restore a script saved with --on-error save and resume it")
    resume.add_argument("name")
    resume.set_defaults(func=_cmd_resume)
    for option in (run, resume):
        option.add_argument(
            "--on-error",
            choices=["shell", "exit", "save"],
            help="on an exception: open the post-mortem shell (default on a terminal), exit with the "
            "error, or save the failure as a session (forkpoint resume NAME goes on after an edit)",
        )
        option.add_argument(
            "--session",
            metavar="NAME",
            help="the session name for --on-error save (resume: default NAME-2, a session is never replaced)",
        )
    restore = sub.add_parser("restore", help="bring a saved session back and open the shell in it")
    restore.add_argument("name")
    restore.set_defaults(func=_cmd_restore)
    for option in (restore, resume):
        option.add_argument(
            "--lazy",
            action="store_true",
            help="ready at once whatever the size: memory is read in as it is touched and in the "
            "background (userfaultfd); the saved checkpoint stays on disk, and a rewind to it "
            "restores it again",
        )
    for option in (shell, run, restore, resume):
        option.add_argument("--python", help="the interpreter that runs your code (default: forkpoint's own)")
        option.add_argument(
            "--memory-budget",
            default="50%",
            help="memory checkpoints may hold before old ones are evicted: 4G, 512M or a share of RAM (50%%)",
        )
        option.add_argument("--max-checkpoints", type=int, default=200, help="most live checkpoints (200)")
    run.set_defaults(func=_cmd_run)
    doctor = sub.add_parser("doctor", help="what works on this machine: fork checkpoints, CRIU, privileges")
    doctor.set_defaults(func=_cmd_doctor)
    sessions = sub.add_parser("sessions", help="list saved sessions")
    sessions.set_defaults(func=_cmd_store)
    remove = sub.add_parser("rm", help="delete a saved session")
    remove.add_argument("name")
    remove.set_defaults(func=_cmd_store)
    export = sub.add_parser("export", help="write a saved session to one file, to move it to another machine")
    export.add_argument("name")
    export.add_argument("file", nargs="?", help="where to write it (default: ./NAME.forkpoint)")
    export.set_defaults(func=_cmd_store)
    imported = sub.add_parser("import", help="check a session file written by export and add it to the store")
    imported.add_argument("file")
    imported.add_argument("name", nargs="?", help="the name to give it (default: the one it was saved under)")
    imported.set_defaults(func=_cmd_store)
    kernel = sub.add_parser("kernel", help="the Jupyter kernel: forkpoint kernel install")
    kernel_sub = kernel.add_subparsers(dest="kernel_command", required=True, metavar="ACTION")
    install = kernel_sub.add_parser("install", help='install the "Python (forkpoint)" kernelspec')
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user only (~/.local/share/jupyter)")
    where.add_argument("--prefix", help="under this prefix (a virtualenv: --prefix $VIRTUAL_ENV)")
    install.set_defaults(func=_cmd_kernel_install)
    return parser


def _cmd_kernel_install(args: argparse.Namespace) -> int:
    try:
        from forkpoint.kernel import spec

        folder = spec.install(user=args.user, prefix=args.prefix)  # imports jupyter_client
    except ImportError:
        raise ForkpointError(
            "the kernel needs the Jupyter packages.", "pip install 'forkpoint[jupyter]'"
        ) from None
    print(f"installed the kernelspec {spec.NAME!r} in {folder}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from forkpoint.persist.doctor import main_report

    lines, ok = main_report()
    print("\n".join(lines))
    return 0 if ok else 1


def _cmd_store(args: argparse.Namespace) -> int:
    from forkpoint import store_commands

    return store_commands.run(args)


def _cmd_restore(args: argparse.Namespace) -> int:
    from forkpoint.shell.render import Renderer
    from forkpoint.shell.repl import Shell

    render = Renderer()
    started = time.monotonic()
    args.restore = args.name
    with _controller(args, render) as controller:
        if controller.script is not None:
            raise ForkpointError(
                f"session {args.name!r} is a script's.", f"edit it, then forkpoint resume {args.name}"
            )
        took = time.monotonic() - started
        render.line(f'restored "{args.name}" [{controller.current}] in {took:.1f} s', "info")
        return Shell(controller, render).run()


def _controller(args: argparse.Namespace, render: Renderer) -> Controller:
    from forkpoint.controller import Controller
    from forkpoint.controller.memory import physical_memory

    launched, args.launched = args.launched, None  # the controller owns it from here
    return Controller(
        launched=launched,
        python=args.python,
        memory_budget=parse_size(args.memory_budget, total=physical_memory()[0]),
        max_checkpoints=args.max_checkpoints,
        on_event=render.event,
        reap_everything=True,
        restore=getattr(args, "restore", None),
        lazy=getattr(args, "lazy", False),
    )


def _cmd_shell(args: argparse.Namespace) -> int:
    from forkpoint.shell.render import Renderer
    from forkpoint.shell.repl import Shell

    render = Renderer()
    with _controller(args, render) as controller:
        return Shell(controller, render).run()


def _cmd_run(args: argparse.Namespace) -> int:
    from forkpoint import script_commands

    return script_commands.run(args, _controller)


def _cmd_resume(args: argparse.Namespace) -> int:
    from forkpoint import script_commands

    return script_commands.resume(args, _controller)


def _exit_on_signal(signum: int, frame: object) -> None:
    # SIGHUP (terminal closed) and SIGTERM unwind through the controller's cleanup.
    raise SystemExit(128 + signum)


def _split_program_args(words: list[str]) -> tuple[list[str], list[str]]:
    """forkpoint's words and the program's. The program's own arguments follow ``--``, so
    forkpoint's options may sit on either side of the script path (argparse alone cannot mix
    them with a list of positionals). With no ``--``, every word after ``-m MODULE`` or
    ``-c CODE`` is the program's, as python takes them: ``forkpoint run -m pytest -q tests``."""
    if "--" in words:
        cut = words.index("--")
        return words[:cut], words[cut + 1 :]
    if words[:1] == ["run"]:
        for i, word in enumerate(words):
            if word in ("-m", "-c"):
                return words[: i + 2], words[i + 2 :]
            if word[:2] in ("-m", "-c") and len(word) > 2:
                return [*words[:i], word[:2], word[2:]], words[i + 1 :]
            if i > 0 and not word.startswith("-") and words[i - 1] not in _VALUED:
                break  # the script's path
    return words, []


# run's options that take a value: the word after one is never the script.
_VALUED = {
    "--checkpoint-at",
    "--watch",
    "--on-error",
    "--session",
    "--python",
    "--memory-budget",
    "--max-checkpoints",
}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    ours, theirs = _split_program_args(words)
    args = _parser().parse_args(ours)
    args.script_args = theirs
    signal.signal(signal.SIGHUP, _exit_on_signal)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    args.launched = None
    try:
        if args.func in (_cmd_shell, _cmd_run):
            # The first head starts now, while the controller imports (launch.py says why).
            from forkpoint import launch

            args.launched = launch.prepare()
            launch.spawn_agent(args.python or sys.executable, args.launched, None)
        code: int = args.func(args)
        return code
    except ForkpointError as exc:
        from forkpoint.shell.messages import hint

        print(f"forkpoint: {exc.message}", file=sys.stderr)
        if (said := hint(exc)) is not None:
            print(f"  ({said})", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from forkpoint import errlog
        from forkpoint.shell.messages import internal_error_text

        log = errlog.record(exc, f"forkpoint {' '.join(words)[:200]}")
        print(internal_error_text(exc, log, goes_on=False), file=sys.stderr)
        return 70
    finally:
        if args.launched is not None:  # never handed to a controller (an error before it)
            args.launched.close()


if __name__ == "__main__":
    sys.exit(main())
