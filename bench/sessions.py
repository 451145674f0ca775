"""Save and restore of a session holding 1 GB, next to plain CRIU on the same data, same run.

Run: ``.venv/bin/python bench/sessions.py [MB]`` (part of ``make bench``; needs root for CRIU).

- forkpoint: ``Controller.save()`` of a shell checkpoint whose namespace holds a numpy array,
  and ``Controller(restore=...)`` until a head is ready for input.
- plain CRIU: ``criu dump -t PID`` of a detached python process holding the same array, and
  ``criu restore -d`` of it, through the same CRIU binary; and the dump followed by an fsync of
  its images, since a forkpoint save is durable before it is renamed into place.
- bytes on disk for both.
- lazy restore (``Controller(restore=..., lazy=True)``, CRIU's lazy-pages daemon): time until
  the head is ready, and the first full read of the array after it (``a.sum()``), next to the
  same read after an eager restore.
- pages shared on disk: ``forkpoint run --on-error save`` of a script that builds the array
  and then changes 1 MB of it in each of five statements: the session's bytes on disk next to
  what its checkpoints would take stored whole.
- a shell session's branch (issue 15): 20 inputs, the first building the array and each
  other changing 1 MB of it, saved with every checkpoint of its branch (``--all``): bytes on
  disk next to the checkpoints stored whole; and saving it again after 10 more inputs (what
  its last save wrote is linked, only the new ones dumped) next to a first save of the same
  30 checkpoints under a new name.
- a session as one file (issue 15): ``forkpoint export`` and ``forkpoint import`` (whole
  commands, start-up included) of a saved 1 GB session, against ``tar -cf`` / ``tar -xf`` of
  the same session dir followed by an fsync of what it wrote (export and import are durable),
  and ``tar --zstd`` where zstd is installed; for an array that compresses (``arange``) and one
  that does not (random floats), alternating, best of three.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forkpoint.controller import Controller, SaveScope
from forkpoint.persist import pages, store
from forkpoint.persist.criu import find_criu

HOLD = """
import os, sys, time
import numpy as np
a = np.arange({n}, dtype=np.float64)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
open(sys.argv[1], "w").write("ready")
while True:
    time.sleep(0.05)
"""


def disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def plain_criu(n: int, work: Path) -> tuple[float, float, int, float]:
    criu = find_criu().path
    ready = work / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(n=n), str(ready)], stdin=subprocess.DEVNULL, start_new_session=True
    )
    while not ready.exists():
        if holder.poll() is not None:
            raise SystemExit("the process to dump did not start")
        time.sleep(0.01)
    images = work / "plain"
    images.mkdir()
    t0 = time.perf_counter()
    subprocess.run([criu, "dump", "-t", str(holder.pid), "-D", str(images), "-o", "dump.log"], check=True)
    dumped = time.perf_counter() - t0
    for path in images.iterdir():  # what it takes to make the same images durable
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    synced = time.perf_counter() - t0
    holder.wait()
    pidfile = work / "pid"
    t0 = time.perf_counter()
    subprocess.run(
        [criu, "restore", "-D", str(images), "-d", "--pidfile", str(pidfile), "-o", "restore.log"], check=True
    )
    restored = time.perf_counter() - t0
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    _reap(pid)
    return dumped, restored, disk(images), synced


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.01)


def forkpoint(n: int) -> tuple[float, float, int, float, float, float]:
    null = os.open(os.devnull, os.O_RDWR)
    stdio = (null, null, null)
    try:
        with Controller(stdio=stdio) as c:
            c.execute(f"import numpy as np\na = np.arange({n}, dtype=np.float64)")
            saved = c.save("bench", scope=SaveScope.ONLY)  # one checkpoint, as plain CRIU dumps one
        timed = []
        for lazy in (False, True):
            t0 = time.perf_counter()
            with Controller(restore="bench", stdio=stdio, lazy=lazy) as c:
                ready = time.perf_counter() - t0
                t0 = time.perf_counter()
                assert c.evaluate("float(a.sum())") == (True, f"{float(n * (n - 1) // 2)}")
                timed += [ready, time.perf_counter() - t0]
    finally:
        os.close(null)
    restored, read_eager, lazy_ready, read_lazy = timed
    return saved.seconds, restored, disk(store.sessions_dir() / "bench"), lazy_ready, read_lazy, read_eager


SCRIPT = (
    """
import numpy as np
a = np.arange({n}, dtype=np.float64)
"""
    + "".join(f"a[{k} << 20 : ({k} << 20) + (1 << 17)] += 1\n" for k in range(1, 6))
    + "raise RuntimeError('stop')\n"
)


def shared(n: int, work: Path) -> tuple[int, int, int, float]:
    """Bytes on disk of a script session's checkpoints, what they would take whole, how many."""
    script = work / "grow.py"
    script.write_text(SCRIPT.format(n=n))
    t0 = time.perf_counter()
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("forkpoint")),
            "run",
            str(script),
            "--on-error",
            "save",
            "--session",
            "grow",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    took = time.perf_counter() - t0
    if "saved the failure" not in done.stderr:  # forkpoint's sentences go to stderr
        raise SystemExit(done.stdout + done.stderr)
    images = store.sessions_dir() / "grow" / "images"
    return disk(images), whole_bytes(images), len(list(images.iterdir())), took


def whole_bytes(images: Path) -> int:
    """What the checkpoints under ``images`` would take with no page shared on disk."""
    total = 0
    for dump in images.iterdir():
        for path in pages.task_pagemaps(dump):
            entries = pages.read_pagemap(path).entries
            total += sum(nr for _, nr, f in entries if f & (pages.PE_PRESENT | pages.PE_PARENT)) * pages.PAGE
    return total


def branch(n: int) -> tuple[int, int, int, float, float, float, int]:
    """A shell session of 20 inputs saved with its branch, then again after 10 more."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null)) as c:
            c.execute(f"import numpy as np\na = np.arange({n}, dtype=np.float64)")
            for k in range(1, 20):
                c.execute(f"a[{k} << 17 : ({k} + 1) << 17] += 1")  # 1 MB
            first = c.save("branch", scope=SaveScope.ALL)
            images = store.sessions_dir() / "branch" / "images"
            stored, whole = disk(images), whole_bytes(images)
            for k in range(20, 30):
                c.execute(f"a[{k} << 17 : ({k} + 1) << 17] += 1")
            again = c.save("branch", scope=SaveScope.ALL, replace=True)
            fresh = c.save("branch-fresh", scope=SaveScope.ALL)
    finally:
        os.close(null)
    return stored, whole, len(first.kept), first.seconds, again.seconds, fresh.seconds, len(again.carried)


def _command(*argv: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(list(argv), check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _fsync_all(path: Path) -> None:
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        fd = os.open(file, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def travel(n: int, work: Path, fill: str) -> dict[str, float]:
    """Export and import of a session holding ``n`` floats made by ``fill``, against tar."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null)) as c:
            c.execute(f"import numpy as np\na = {fill.format(n=n)}")
            c.save("trip", scope=SaveScope.ONLY)
    finally:
        os.close(null)
    exe = str(Path(sys.executable).with_name("forkpoint"))
    folder = store.sessions_dir() / "trip"
    zstd = shutil.which("zstd") is not None
    best: dict[str, float] = {}

    def keep(key: str, value: float) -> None:
        best[key] = min(best.get(key, value), value)

    for _ in range(3):
        for file in work.glob("trip.*"):
            file.unlink()
        keep("export", _command(exe, "export", "trip", str(work / "trip.fp")))
        t0 = time.perf_counter()
        _command("tar", "-cf", str(work / "trip.tar"), "-C", str(folder.parent), "trip")
        _fsync_all(work / "trip.tar")
        keep("tar -c", time.perf_counter() - t0)
        if zstd:
            t0 = time.perf_counter()
            _command("tar", "--zstd", "-cf", str(work / "trip.tar.zst"), "-C", str(folder.parent), "trip")
            _fsync_all(work / "trip.tar.zst")
            keep("tar --zstd -c", time.perf_counter() - t0)
        store.remove("trip")
        keep("import", _command(exe, "import", str(work / "trip.fp")))
        for archive, flag, key in (
            ("trip.tar", "-xf", "tar -x"),
            ("trip.tar.zst", "--zstd", "tar --zstd -x"),
        ):
            if not (work / archive).exists():
                continue
            out = work / "out"
            out.mkdir()
            t0 = time.perf_counter()
            _command(
                "tar", *([flag, "-xf"] if flag == "--zstd" else [flag]), str(work / archive), "-C", str(out)
            )
            _fsync_all(out)
            keep(key, time.perf_counter() - t0)
            shutil.rmtree(out)
    best["session bytes"] = float(disk(folder / "images"))
    best["export bytes"] = float((work / "trip.fp").stat().st_size)
    if zstd:
        best["tar --zstd bytes"] = float((work / "trip.tar.zst").stat().st_size)
    store.remove("trip")
    return best


def main(megabytes: str = "1024", only: str = "") -> None:
    n = int(megabytes) * (1 << 20) // 8
    if only == "travel":
        for label, fill in (
            ("arange", "np.arange({n}, dtype=np.float64)"),
            ("random", "np.random.default_rng(0).random({n})"),
        ):
            with tempfile.TemporaryDirectory() as tmp:
                os.environ["XDG_DATA_HOME"] = tmp
                print(label, travel(n, Path(tmp), fill))
        return
    plains, ourses = [], []
    for _ in range(3):  # alternating, best of three: writing GBs makes the page cache noisy
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["XDG_DATA_HOME"] = tmp
            plains.append(plain_criu(n, Path(tmp)))
            shutil.rmtree(Path(tmp) / "plain", ignore_errors=True)
            ourses.append(forkpoint(n))
    plain = tuple(min(p[i] for p in plains) for i in range(4))
    ours = tuple(min(o[i] for o in ourses) for i in range(6))
    print(f"a session holding a {megabytes} MB numpy array (best of three, alternating)")
    for i, (what, theirs) in enumerate((("save   ", "criu dump   "), ("restore", "criu restore"))):
        ratio = ours[i] / plain[i]
        print(f"  {what}  forkpoint {ours[i]:6.2f} s | plain {theirs} {plain[i]:6.2f} s | {ratio:5.2f}x")
    print(f"  on disk  forkpoint {ours[2] / 1e6:6.0f} MB | plain criu      {plain[2] / 1e6:6.0f} MB")
    print(
        f"  save, both durable: forkpoint {ours[0]:.2f} s | plain criu dump + fsync {plain[3]:.2f} s | "
        f"{ours[0] / plain[3]:5.2f}x"
    )
    print(
        f"  restore --lazy: ready in {ours[3]:.2f} s ({ours[3] / plain[1]:.2f}x plain criu restore); "
        f"then a.sum() {ours[4]:.2f} s, against {ours[5]:.2f} s after an eager restore"
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_DATA_HOME"] = tmp
        stored, whole, count, took = shared(n, Path(tmp))
    print(
        f"a script session: {count} checkpoints of a {megabytes} MB array, 1 MB changed between each "
        f"(run to failure and save {took:.1f} s)"
    )
    print(f"  on disk  {stored / 1e6:6.0f} MB | stored whole {whole / 1e6:6.0f} MB | {stored / whole:5.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_DATA_HOME"] = tmp
        stored, whole, count, first, again, fresh, carried = branch(n)
    print(f"a shell session: 20 inputs on a {megabytes} MB array, 1 MB changed by each, saved --all")
    print(
        f"  on disk  {stored / 1e6:6.0f} MB for {count} checkpoints | stored whole {whole / 1e6:6.0f} MB | "
        f"{stored / whole:5.2f}x; saved in {first:.1f} s"
    )
    print(
        f"  10 inputs later, saved again: {again:.1f} s ({carried} checkpoints linked from the last save) | "
        f"a first save of the same {count + 10}: {fresh:.1f} s | {again / fresh:5.2f}x"
    )
    for label, fill in (
        ("np.arange (compresses)", "np.arange({n}, dtype=np.float64)"),
        ("random floats (does not)", "np.random.default_rng(0).random({n})"),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["XDG_DATA_HOME"] = tmp
            got = travel(n, Path(tmp), fill)
        print(
            f"a session as one file, {megabytes} MB of {label}: images {got['session bytes'] / 1e6:.0f} MB, "
            f"exported {got['export bytes'] / 1e6:.0f} MB"
            + (f", tar --zstd {got['tar --zstd bytes'] / 1e6:.0f} MB" if "tar --zstd bytes" in got else "")
        )
        for ours, theirs in (("export", "tar -c"), ("import", "tar -x")):
            ratio = got[ours] / got[theirs]
            line = f"  {ours}  {got[ours]:5.2f} s | {theirs} + fsync {got[theirs]:5.2f} s | {ratio:5.2f}x"
            zst = theirs.replace("tar", "tar --zstd")
            if zst in got:
                line += f" | {zst} + fsync {got[zst]:5.2f} s | {got[ours] / got[zst]:5.2f}x"
            print(line)


if __name__ == "__main__":
    main(*sys.argv[1:])
