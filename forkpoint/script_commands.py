"""``forkpoint run`` and ``forkpoint resume``: a script under checkpoints, and what follows
its failure (the post-mortem shell, an exit with the error, or the failure saved as a session
that ``resume`` goes on from after an edit, on this machine or another)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from forkpoint.errors import ForkpointError

if TYPE_CHECKING:
    from forkpoint.controller import Controller
    from forkpoint.instrument.sites import Plan
    from forkpoint.shell.render import Renderer

__all__ = ["resume", "run"]

ControllerFor = Callable[[argparse.Namespace, "Renderer"], "Controller"]


def run(args: argparse.Namespace, controller_for: ControllerFor) -> int:
    from forkpoint.controller.results import Status
    from forkpoint.shell.render import Renderer

    on_error = "shell" if args.interactive else args.on_error or ("shell" if sys.stdin.isatty() else "exit")
    given = [w for w in (args.script, args.module, args.code) if w is not None]
    if len(given) != 1:
        raise ForkpointError("run takes one program: a script, -m MODULE or -c CODE.", "forkpoint run --help")
    stem = os.path.splitext(os.path.basename(args.script or args.module or "c"))[0]
    session = _session_name(args.session, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    render = Renderer(notices=sys.stderr)
    with controller_for(args, render) as controller:
        watch = [os.path.abspath(w) for w in args.watch]
        if args.code is not None:
            result = controller.run_script("-c", args.script_args, watch=watch, code=args.code)
        else:
            module, path = (
                _module_file(args.module, controller.python) if args.module else (None, args.script)
            )
            sites = _sites(path, args.checkpoint_at, watch, render)
            result = controller.run_script(
                path,
                args.script_args,
                tuple(sites.entries),
                sites.lines,
                watch,
                module=module,
                stop_in_tests=on_error != "exit",
                every_hit=args.checkpoint_every_hit,
            )
        if result.status is Status.EXIT and args.interactive:
            from forkpoint.shell.repl import Shell

            controller.script_ended()
            return Shell(controller, render).run()
        if result.status is Status.EXIT:
            return result.exit_code or 0
        render.result(result)
        return _after_failure(controller, render, on_error, session)


def _session_name(given: str | None, default: str) -> str:
    """The name --on-error save will use, checked before the program runs (a bad one found
    only after a long job failed would lose the failure): ``given``, or ``default`` made a
    valid name, short enough for the -2, -3 a taken name gets."""
    from forkpoint.persist.store import check_name

    if given is not None:
        return check_name(given)
    return re.sub(r"[^A-Za-z0-9._-]", "_", default).lstrip("._-")[:56] or "session"


def _after_failure(controller: Controller, render: Renderer, on_error: str, name: str) -> int:
    """What a script that failed (under run or resume) does next: save the failure as a
    session (``--on-error save``; under a free name, never replacing one), exit with the
    error, or open the post-mortem shell."""
    if on_error == "save":
        from forkpoint.errors import Reason
        from forkpoint.persist.store import free_name
        from forkpoint.shell.render import human_bytes

        for _ in range(20):  # another job of the same name may take the free one first
            name = free_name(name)
            try:
                saved = controller.save_script(name, render.progress)
                break
            except ForkpointError as exc:
                if exc.reason is not Reason.SESSION_EXISTS:
                    raise
        else:
            raise ForkpointError(f"no free name for the session after {name!r}; the failure was not saved.")
        render.line(
            f'saved the failure as session "{name}": {human_bytes(saved.size)} in {saved.seconds:.1f} s; '
            f"edit the script, then: forkpoint resume {name}",
            "info",
            render.notices,  # forkpoint's own sentences go to stderr: stdout is the program's
        )
        return 1
    if on_error == "exit":
        return 1
    from forkpoint.shell.repl import Shell  # prompt_toolkit only when a prompt is needed

    return Shell(controller, render, postmortem=True).run()


def resume(args: argparse.Namespace, controller_for: ControllerFor) -> int:
    """Restore a saved script session and resume it with the files as they are now."""
    from forkpoint.controller.results import Status
    from forkpoint.shell.render import Renderer

    render = Renderer(notices=sys.stderr)
    args.restore = args.name
    with controller_for(args, render) as controller:
        if controller.script is None:
            raise ForkpointError(
                f"session {args.name!r} was saved from the shell.", f"forkpoint restore {args.name}"
            )
        result = controller.resume().result
        if result.status is Status.EXIT:
            return result.exit_code or 0
        render.result(result)
        on_error = args.on_error or ("shell" if sys.stdin.isatty() else "exit")
        return _after_failure(controller, render, on_error, _session_name(args.session, args.name))


_FIND_MODULE = """
import importlib.util, sys
sys.path.insert(0, "")
try:
    spec = importlib.util.find_spec(sys.argv[1])
    if spec is not None and spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(sys.argv[1] + ".__main__")
except (ImportError, ValueError):
    spec = None
print(spec.name, spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None
"""


def _module_file(name: str, python: str) -> tuple[str, str]:
    """The module ``python -m name`` runs (``pkg.__main__`` for a package) and its file, as
    the interpreter that runs the code finds them (the current folder first, as -m searches)."""
    import subprocess

    found = subprocess.run([python, "-c", _FIND_MODULE, name], capture_output=True, text=True, timeout=60)
    module, _, origin = found.stdout.strip().partition(" ")
    if found.returncode != 0 or not origin:
        raise ForkpointError(f"there is no module named {name} (with a .py file) for {python}.")
    return module, origin


def _sites(script: str, specs: list[str], watch: list[str], render: Renderer) -> Plan:
    """Resolve --checkpoint-at specs in the script and the user's modules; say where a
    checkpoint had to move."""
    from forkpoint.controller import read_script
    from forkpoint.instrument.sites import plan, user_sources

    path = os.path.abspath(script)
    if not specs:
        return plan(specs, path, {})  # nothing to find: the script is read once, by run_script
    sources = {**user_sources(path, watch), path: read_script(path)}
    found = plan(specs, path, sources)
    for note in found.notes:
        render.line(f"forkpoint: {note}", "warn", render.notices)
    return found
