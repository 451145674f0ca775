"""The commands on saved sessions that need no controller: ``sessions``, ``rm``, ``export``
and ``import``. Each first removes what forkpoints killed before left behind (their runtime
dirs, partial saves and imports), so a SIGKILL's leftovers last until the next command."""

from __future__ import annotations

import argparse
import os
import sys

from forkpoint.shell.render import Renderer, human_bytes

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    _sweep()
    render = Renderer()
    if args.command == "sessions":
        from forkpoint.persist.store import list_sessions

        render.sessions(list_sessions())
    elif args.command == "rm":
        from forkpoint.persist.store import remove

        remove(args.name)
        render.line(f"removed session {args.name!r}")
    elif args.command == "export":
        from forkpoint.persist.archive import export

        if args.file == "-":  # the archive is stdout: forkpoint's sentences go to stderr
            render = Renderer(out=sys.stderr)
        done = export(args.name, args.file, lambda at, of: render.transfer("exporting", args.name, at, of))
        how = "compressed with zstd" if done.compressed else "not compressed: its pages do not shrink"
        where = "standard output" if done.file == "-" else done.file
        render.line(
            f'exported "{done.name}" to {where}: {human_bytes(done.size)} ({how}; its images: '
            f"{human_bytes(done.session)}) in {done.seconds:.1f} s"
        )
    else:
        from forkpoint.persist.unpack import import_

        got = import_(args.file, args.name, lambda at, of: render.transfer("importing", args.file, at, of))
        then = "resume" if got.source.startswith("run") else "restore"
        render.line(
            f'imported "{got.name}" ({got.checkpoints} checkpoints, {human_bytes(got.size)}) in '
            f"{got.seconds:.1f} s; forkpoint {then} {got.name} brings it back"
        )
    return 0


def _sweep() -> None:
    from forkpoint import leftovers, paths
    from forkpoint.persist.store import sessions_dir

    root = paths.runtime_root()
    if os.path.isdir(root) and os.lstat(root).st_uid == os.getuid():  # never another user's
        leftovers.sweep(root, sessions_dir())
