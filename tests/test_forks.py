"""forks.fork_sibling: the one fork a rewind makes (clone with CLONE_PARENT), in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import os, random, signal, sys, threading, time
    from forkpoint.agent import forks
    before = random.random()
    pid = forks.fork_sibling()
    if pid == 0:
        # the child: glibc's idea of its thread id is its own (another thread's pthread_kill
        # signals it by that id: with the parent's it fails), threads run, random is reseeded
        got = []
        signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
        main = threading.get_ident()
        t = threading.Thread(target=signal.pthread_kill, args=(main, signal.SIGUSR1))
        t.start()
        t.join()
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        print("CHILD", os.getpid(), os.getppid(), bool(got), random.random() != before, flush=True)
        os._exit(0)
    print("PARENT", pid, os.getpid(), os.getppid(), flush=True)
    """
)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="fork_sibling is for x86-64 (others double-fork)")
def test_a_sibling_is_a_child_of_our_parent_with_a_working_interpreter() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    sibling, me, parent = (int(x) for x in lines["PARENT"])
    _, status = os.waitpid(sibling, 0)  # the sibling is our child, so ours to reap (by its pid:
    # orphans of earlier tests come to this process too, a subreaper)
    assert parent == os.getpid() and sibling not in (0, me)
    pid, ppid, same_tid, reseeded = lines["CHILD"]
    assert int(pid) == sibling and int(ppid) == os.getpid()  # a sibling of the caller, not its child
    assert same_tid == "True" and reseeded == "True" and status == 0
