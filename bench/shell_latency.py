"""Round trip of one input in a real pty, as a curve over checkpoints and head size.

What a user feels at the prompt: the time from the Enter of ``pass`` to the next prompt,
in ``forkpoint shell``, ``python -i`` and IPython (when installed), each driven the same way
by pexpect with its 50 ms send delay off. The head holds a numpy array of each size (touched,
so its pages are real); the round trip is sampled as the checkpoints pile up to 200.
Next to it, in the same run: a bare ``fork()`` + exit + wait of a python process holding the
same array (alone, and kept as checkpoints are), measured inside the ``python -i`` baseline,
since issue 12's bar is "empty-head
round trip + 2 bare forks".

    python bench/shell_latency.py [--sizes 0,1G,4G] [--inputs 200] [--plot docs/shell_latency.png]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parent.parent
FORKPOINT_PROMPT = re.compile(r"\[\d+\]>>>\x1b\[")
POINTS = (10, 25, 50, 100, 150, 200)
WINDOW = 9  # inputs either side of a point whose median is the point's figure
FORK_CODE = (
    "import os as _o, time as _t\n"
    "def _fork_ms():\n"
    "    ts = []\n"
    "    for _ in range(31):\n"
    "        a = _t.perf_counter(); p = _o.fork()\n"
    "        if p == 0: _o._exit(0)\n"
    "        _o.waitpid(p, 0); ts.append(_t.perf_counter() - a)\n"
    "    alone = sorted(ts)[15]; ts = []; ps = []; r, w = _o.pipe()\n"
    "    for _ in range(200):\n"
    "        a = _t.perf_counter(); p = _o.fork()\n"
    "        if p == 0: _o.close(w); _o.read(r, 1); _o._exit(0)\n"
    "        ts.append(_t.perf_counter() - a); ps.append(p)\n"
    "    _o.close(w); [_o.waitpid(p, 0) for p in ps]\n"
    "    return alone * 1000, sorted(ts[-31:])[15] * 1000\n"
    "print('FORK %.3f %.3f' % _fork_ms())\n"
)


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(PROMPT_TOOLKIT_NO_CPR="1", NO_COLOR="1", TERM="xterm", PYTHON_BASIC_REPL="1")
    e.pop("PYTHONSTARTUP", None)
    return e


class Repl:
    """One interactive program in a pty; ``round_trip`` types ``pass`` and waits for a prompt."""

    def __init__(self, argv: list[str], prompt: re.Pattern[str] | str, cwd: str) -> None:
        self.prompt = prompt
        self.child = pexpect.spawn(
            argv[0], argv[1:], env=env(), cwd=cwd, encoding="utf-8", dimensions=(50, 200), timeout=120
        )
        self.child.delaybeforesend = None
        self.child.expect(prompt)

    def line(self, text: str) -> str:
        self.child.send(text + "\r")
        self.child.expect(self.prompt)
        return str(self.child.before)

    def fork_ms(self, cwd: str) -> tuple[float, float]:
        """Run FORK_CODE: the median bare fork+exit+wait, and the median fork whose child
        stays when 170-200 such children are alive, as checkpoints are (the kernel gives
        each kept fork page tables of its own, 2 MB per GiB even of huge pages), in ms."""
        path = Path(cwd, "fork_ms.py")
        path.write_text(FORK_CODE)
        self.child.send(f"exec(open({str(path)!r}).read())\r")
        self.child.expect(r"FORK ([\d.]+) ([\d.]+)")
        ms = float(self.child.match.group(1)), float(self.child.match.group(2))
        self.child.expect(self.prompt)
        return ms

    def round_trip(self) -> float:
        start = time.perf_counter()
        self.child.send("pass\r")
        self.child.expect(self.prompt)
        return time.perf_counter() - start

    def close(self) -> None:
        self.child.terminate(force=True)
        self.child.close(force=True)


def allocate(repl: Repl, size: int) -> None:
    if size:
        repl.line(f"import numpy as _np; _big = _np.ones({size // 8})")


def curve(repl: Repl, inputs: int) -> dict[int, float]:
    times = [repl.round_trip() for _ in range(inputs)]
    return {
        p: statistics.median(times[max(0, p - 1 - WINDOW // 2) : p + WINDOW // 2]) * 1000
        for p in POINTS
        if p <= inputs
    }


def spawn(kind: str, cwd: str) -> Repl | None:
    py = sys.executable
    if kind == "forkpoint":
        return Repl(
            [
                str(Path(py).with_name("forkpoint")),
                "shell",
                "--memory-budget",
                "90%",
                "--max-checkpoints",
                "400",
            ],
            FORKPOINT_PROMPT,
            cwd,
        )
    if kind == "python -i":
        return Repl([py, "-q", "-i"], ">>> ", cwd)
    ipython = Path(py).with_name("ipython")
    if not ipython.exists():
        return None
    return Repl(
        [
            str(ipython),
            "--simple-prompt",
            "--no-banner",
            "--colors=NoColor",
            "--HistoryManager.enabled=False",
        ],
        re.compile(r"In \[\d+\]: "),
        cwd,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0,1G,4G")
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--kinds", default="forkpoint,python -i,ipython")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--plot", help="draw the curves into this PNG (needs matplotlib)")
    ap.add_argument("--before", help="a --json file of an earlier forkpoint, drawn dashed in the plot")
    args = ap.parse_args()
    results: dict[str, dict[str, dict[int, float]]] = {}
    forks: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as cwd:
        for size_text in args.sizes.split(","):
            size = parse_size(size_text)
            for kind in args.kinds.split(","):
                repl = spawn(kind, cwd)
                if repl is None:
                    print(f"{kind}: not installed, left out")
                    continue
                try:
                    allocate(repl, size)
                    results.setdefault(size_text, {})[kind] = curve(repl, args.inputs)
                    if kind == "python -i":
                        forks[size_text] = repl.fork_ms(cwd)
                finally:
                    repl.close()
                row = "  ".join(f"{p}:{ms:7.2f}" for p, ms in results[size_text][kind].items())
                print(f"{size_text:>4} {kind:<10} round trip ms at checkpoints  {row}", flush=True)
            if size_text in forks:
                alone, shared = forks[size_text]
                print(
                    f"{size_text:>4} bare fork+exit+wait of python -i with that head: {alone:.2f} ms alone, "
                    f"{shared:.2f} ms for a fork whose child stays, with 170-200 kept"
                )
    print()
    empty = results.get(args.sizes.split(",")[0], {}).get("forkpoint")
    for size_text, by_kind in results.items():
        fp = by_kind.get("forkpoint")
        if fp is None or empty is None or size_text not in forks:
            continue
        last = max(fp)
        bar = empty[last] + 2 * forks[size_text][1]
        print(
            f"{size_text:>4}: forkpoint round trip {fp[min(fp)]:.2f} ms at {min(fp)} checkpoints, "
            f"{fp[last]:.2f} ms at {last}; bar at {last} (empty head {empty[last]:.2f} + 2 bare forks) "
            f"{bar:.2f} ms: {'met' if fp[last] <= bar else 'MISSED'}; "
            f"python -i {by_kind['python -i'][last]:.2f} ms"
            + (f", IPython {by_kind['ipython'][last]:.2f} ms" if "ipython" in by_kind else "")
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"curves": results, "forks_ms": forks}, indent=1))
    if args.plot:
        before = json.loads(Path(args.before).read_text())["curves"] if args.before else {}
        plot(results, Path(args.plot), before)


def plot(
    results: dict[str, dict[str, dict[int, float]]], out: Path, before: dict[str, dict[str, dict[str, float]]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {"0": "tab:green", "1G": "tab:blue", "4G": "tab:red"}
    for size_text, by_kind in before.items():
        pts = by_kind.get("forkpoint")
        if pts:
            xs = [int(p) for p in pts]
            ax.plot(xs, list(pts.values()), "--", marker="x", ms=4, color=colors.get(size_text),
                    label=f"forkpoint before, head {size_text}")  # fmt: skip
    for size_text, by_kind in results.items():
        for kind, pts in by_kind.items():
            if kind == "forkpoint":
                style, color = "-", colors.get(size_text)
            else:
                style, color = ":", None
            label = f"{kind}{' now' if kind == 'forkpoint' and before else ''}, head {size_text}"
            ax.plot(list(pts), list(pts.values()), style, marker="o", ms=3, color=color, label=label)
    ax.set_xlabel("checkpoints taken (inputs)")
    ax.set_ylabel("round trip of `pass` in a pty, ms (median)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
