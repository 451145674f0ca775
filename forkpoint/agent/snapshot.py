"""Checkpoints as forked children: take, park, rewind (each fork through ``forks.fork``).

A checkpoint is ``fork()``: the parent goes on as the head, the child parks on its own
connection to the controller. Asked to, a parked child forks again and that fork becomes the
new head, continuing from the exact point ``take()`` was called. A forked child leaves in only
two ways: it becomes the head (``take`` returns ``None`` in it), or ``os._exit``.

OS facts relied on:

* fork shares open file descriptions, so a head reading on moves the offsets a checkpoint
  sees; offsets of regular files open for reading are recorded before the fork and set back
  in a new head (write-only and append-mode files keep their offset: output goes on).
* CPython reseeds ``random`` in every forked child (an at-fork hook); the state is saved
  before the fork and put back in a new head, so a rewound run draws the same numbers.
* Buffered stdio and logging handlers are flushed before the fork, or their buffers would
  be written twice (once by the head, once more by every head forked from the checkpoint).
* A parked child is in its own process group, so Ctrl-C at the terminal never reaches it,
  and EOF on its connection means the controller is gone: it exits at once.
* A new head is a grandchild of the checkpoint whose parent exits at once, so the head is
  reparented to the controller (a child subreaper): the controller reaps it and learns how it
  died. Once that happened PR_SET_PDEATHSIG is set (see ``arm``), so the head dies with the
  controller.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Imported up front, not when first needed: a restored process may find the path it was
# imported from gone (another interpreter imports forkpoint from the controller's runtime dir).
from forkpoint.agent import forks, lost_threads, native, process_state, questions, saved_tree
from forkpoint.agent import rng as rng_at_fork
from forkpoint.channel import Channel, connect
from forkpoint.protocol import HEADER, PROTOCOL_VERSION, Message

__all__ = ["activate", "active", "arm", "channel", "notify", "take"]

_PR_SET_PDEATHSIG = 1
_CLONE_NEWPID = 0x20000000


@dataclass
class _Link:
    socket_path: str
    controller_pid: int
    channel: Channel
    armed: bool = False
    directive: dict[str, Any] | None = None


_link: _Link | None = None
_children: list[int] = []
_told: set[str] = set()
NOTICE_TIMEOUT = 5.0  # seconds a head waits for a notice to be shown


@dataclass
class _Saved:
    """What a new head puts back: state that fork does not keep or that the head moved on."""

    offsets: list[tuple[int, int, int, int]]
    written: list[process_state.Written]
    rng: Any
    sigint: Any


def active() -> bool:
    """True in a process run by a forkpoint controller."""
    return _link is not None


def channel() -> Channel:
    if _link is None:
        raise RuntimeError("not connected to a forkpoint controller")
    return _link.channel


def activate(socket_path: str, controller_pid: int) -> None:
    """Connect this process (the first head) to its controller."""
    global _link
    ch = connect(socket_path)
    _link = _Link(socket_path, controller_pid, ch)
    forks.watch_connection(ch.fileno())
    arm()
    ch.send(_hello("head", None))


_restored = False  # restored by CRIU into a PID namespace of its own: its pids are not ours


def self_pid() -> int:
    """This process's pid as the controller sees it (through /proc, mounted outside a
    restored session's PID namespace)."""
    return int(os.readlink("/proc/self")) if _restored else os.getpid()


def _hello(role: str, origin: int | None, secret: str | None = None) -> dict[str, Any]:
    msg = {"op": "hello", "role": role, "pid": self_pid(), "version": PROTOCOL_VERSION, "origin": origin}
    if secret is not None:
        msg["secret"] = secret
    return msg


def notify(kind: str, names: Sequence[str] = (), once: str | None = None, pools: Sequence[str] = ()) -> None:
    """Have the front end show a notice (``kind`` with its ``names``: data, the front end
    says it in words); with ``once``, at most once per key.

    The head waits until the front end has shown it: the notice then sits in the terminal
    exactly between what the program printed before and after, unbuffered output included.
    """
    if once is not None:
        if once in _told:
            return
        _told.add(once)
    if _link is None:
        return
    process_state.settle()
    msg: dict[str, Any] = {"op": "notice", "kind": kind, "names": list(names)}
    if pools:
        msg["pools"] = list(pools)
    if _link.channel.send(msg):
        try:
            _link.channel.recv(timeout=NOTICE_TIMEOUT)  # "noted", or None when the controller is gone
        except TimeoutError:
            pass


def pop_directive() -> dict[str, Any] | None:
    """The resume directive a new head was forked with (once), if any."""
    if _link is None:
        return None
    directive, _link.directive = _link.directive, None
    return directive


def take(
    label: str | None = None,
    at_rest: bool = False,
    site: int | None = None,
    called: list[str] | None = None,
    entry: str | None = None,
    line: int | None = None,
    call: int | None = None,
    outer: list[str] | None = None,
    skipped: int = 0,
) -> int | None:
    """Fork a checkpoint. Returns its pid in the head, ``None`` in a head rewound to it.

    This is the user's pause, and after the first checkpoint every page it writes is a
    copy-on-write fault (the previous checkpoint shares it): it does as little as it can,
    and what can wait for the child (the ``random`` state, the saved record) is done there.
    """
    link = _link
    if link is None:
        return -1
    if not link.armed:
        arm()
    global _takes
    _takes += 1
    if _takes % REAP_EVERY == 0:
        _reap_children()
    offsets, written, nvidia = process_state.scan_fds()
    if nvidia:
        _warn_cuda()
    threads = _warn_threads()
    for pool in native.unsafe_pools():
        notify("unsafe_pool", [pool], once=f"pool:{pool}")
    rng = None if rng_at_fork.in_child else rng_at_fork.state()
    if label is None and site is None and entry is None and not called and not outer:
        tail = _PLAIN_TAIL[at_rest]
    else:
        tail = _tail(label, at_rest, site, called, entry, line, call, outer, skipped)
    sock = link.channel.sock
    process_state.flush()
    told = os.pipe() if _restored else None  # the child says its pid as the controller sees it
    if threads:
        with warnings.catch_warnings():
            # 3.12+ warns on every fork with threads alive; _warn_threads said it once instead.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = forks.fork()
    else:
        pid = forks.fork()
    if pid:
        seen = pid if told is None else saved_tree.read_pid(told)
        body = b'{"op":"taken","pid":%d,%s' % (seen, tail)
        sock.sendall(HEADER.pack(len(body)) + body)
        _children.append(pid)
        return seen
    try:
        if told is not None:
            saved_tree.write_pid(told, self_pid())
        rng_at_fork.enabled = False
        if rng_at_fork.in_child:
            rng = rng_at_fork.at_fork
        _park(_Saved(offsets, written, rng, signal.getsignal(signal.SIGINT)))
    except BaseException:  # a forked child never unwinds into user code
        os._exit(70)
    return None


def _tail(
    label: str | None,
    at_rest: bool,
    site: int | None,
    called: list[str] | None,
    entry: str | None,
    line: int | None,
    call: int | None,
    outer: list[str] | None,
    skipped: int = 0,
) -> bytes:
    """The ``taken`` frame's fields after the pid, as JSON without the opening brace."""
    fields = {
        "label": label,
        "at_rest": at_rest,
        "site": site,
        "called": called or [],
        "entry": entry,
        "line": line,
        "call": call,
        "outer": outer or [],
        "skipped": skipped,  # hits of sites in functions not checkpointed since the last one
    }
    return json.dumps(fields, separators=(",", ":"))[1:].encode()


_PLAIN_TAIL = {flag: _tail(None, flag, None, None, None, None, None, None) for flag in (False, True)}
REAP_EVERY = 8  # evicted checkpoints are reaped every few takes: a zombie costs nothing meanwhile
_takes = 0


def _park(saved: _Saved) -> None:
    """Run as a parked checkpoint; return only in a new head forked from it."""
    assert _link is not None
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _link.channel.close()  # our copy of the head's connection
    _children.clear()
    ch = connect(_link.socket_path)
    ch.send(_hello("checkpoint", None))
    waiting: Message | None = None  # a question that came while the last one was answered
    while True:
        msg, waiting = (waiting, None) if waiting is not None else (ch.recv(), None)
        if msg is None or msg["op"] == "exit":
            os._exit(0)  # EOF: the controller is gone; no atexit, no temp dirs removed
        if msg["op"] == "fork_head" and _fork_head(ch, msg["fg_pgid"], saved):
            _link.directive = msg.get("resume")
            return
        if msg["op"] == "become_head":  # a restored copy, used once (see Controller)
            _become_head(ch, msg["fg_pgid"], saved, self_pid())
            _link.directive = msg.get("resume")
            return
        if msg["op"] == "probe":
            waiting = questions.probe(ch, msg.get("ask"))
        if msg["op"] == "save":
            ch = _fork_candidate(ch, str(msg["attach"]), str(msg["secret"]), msg.get("ask"))
        _reap_all()


def _wait(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped already, by a restored checkpoint's SIGCHLD handler


def _reap_all() -> None:
    """A parked checkpoint reaps what it forked for a save; a restored one also the heads it
    forked (they stay its children: see ``_fork_head``)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return


def _fork_candidate(ch: Channel, attach: str, secret: str, ask: int | None) -> Channel:
    """For a save: a fork of this checkpoint that CRIU can dump on its own, in a new PID
    namespace (a restore then needs none of our pids free) whose init is a small interpreter
    of its own (see ``_INIT``), in a session of its own, with /dev/null for stdio and no
    connection to the controller. The checkpoint answers with the init's pid, the root of the
    tree to dump, and stays as it is. Returns the channel to go on parked on: ours here, and
    in the candidate restored later, its new connection to the new controller.

    The candidate is not the namespace's init so that, restored, it can become a head
    itself: when the init of a PID namespace exits, every process in it is killed, and a head
    is killed at every rewind."""
    pipe = os.pipe()
    middle = forks.fork()
    if middle:
        try:
            pid = saved_tree.read_pid(pipe)
        except ValueError:
            pid = 0
        ch.send({"op": "candidate", "pid": pid, **({} if ask is None else {"ask": ask})})
        return ch
    try:
        os.close(pipe[0])
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWPID) != 0:
            os._exit(1)
        init = forks.fork()
        if init:
            os.close(pipe[1])
            os.waitpid(init, 0)
            os._exit(0)
        os.setsid()
        detached = os.pipe()
        if forks.fork() == 0:
            os.close(pipe[1])
            os.close(detached[0])
            saved_tree.detach(ch)
            os.close(detached[1])  # the init sees EOF: nothing of ours outside is held any more
            return _wait_for_restore(attach, secret)
        os.close(detached[1])
        os.read(detached[0], 1)
        saved_tree.exec_init(pipe[1])
    except BaseException:
        os._exit(70)


def _wait_for_restore(attach: str, secret: str) -> Channel:
    """Wait to be dumped (CRIU ends this process) and, in a restored copy, for the new
    controller's address: connect, take its terminal's fds, go on as a checkpoint."""
    global _restored
    assert _link is not None
    controller = _link.controller_pid
    born = saved_tree.started(controller)
    polls = 0
    while not os.path.exists(attach):
        polls += 1
        if polls % 50 == 0 and saved_tree.started(controller) != born:
            os._exit(0)  # the controller died mid-save: no one will dump this copy, or restore it
        time.sleep(0.002)
    with open(attach) as f:
        where = json.load(f)
    _restored = True
    signal.signal(signal.SIGCHLD, lambda signum, frame: _reap_all())
    _link.socket_path, _link.controller_pid = str(where["socket"]), int(where["controller"])
    new = connect(_link.socket_path)
    new.send(_hello("restored", None, secret))
    _, fds, _, _ = socket.recv_fds(new.sock, 1, 3)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    return new


def _fork_head(ch: Channel, fg_pgid: int, saved: _Saved) -> bool:
    """Fork a new head that is the controller's child; True in that head. A sibling of this
    checkpoint where ``forks.fork_sibling`` can make one, else a double fork (the middle exits,
    the head is reparented to the controller, our subreaper).

    A restored checkpoint lives in a PID namespace of its own, where an orphan goes to the
    namespace's init and not to the controller, so it forks once (its head stays its child,
    and it reaps it): a fork of its memory, restored on 4 KiB pages, costs about 25 ms per GB."""
    origin = self_pid()
    if not _restored and (sibling := forks.fork_sibling()) is not None:  # one fork, not two
        if sibling:
            return False
        _become_head(ch, fg_pgid, saved, origin)
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        middle = forks.fork()
        if middle:
            if not _restored:
                _wait(middle)
            return False
        if not _restored and forks.fork():
            os._exit(0)
    _become_head(ch, fg_pgid, saved, origin)
    return True


def _become_head(ch: Channel, fg_pgid: int, saved: _Saved, origin: int) -> None:
    assert _link is not None
    _link.armed = False
    arm()
    rng_at_fork.enabled = True
    ch.close()
    try:
        os.setpgid(0, fg_pgid)  # join the terminal's foreground group: Ctrl-C and input() work
    except OSError:
        pass
    signal.signal(signal.SIGINT, saved.sigint)
    process_state.restore_offsets(saved.offsets)
    rewound, kept = process_state.rewind_written(saved.written)
    if saved.rng is not None:
        sys.modules["random"].setstate(saved.rng)
    new = connect(_link.socket_path)
    _link.channel = new
    forks.watch_connection(new.fileno())
    lost_threads.guard()  # pools made before the checkpoint lost their threads with the fork
    hello = _hello("head", origin)
    if pools := native.carried():
        hello["pools"] = list(pools)  # pools this head has lost for good: a stall in one is explained
    if rewound or kept:
        hello["files"] = {"rewound": rewound, "kept": kept}  # told with the hello: nothing waits
    new.send(hello)


def arm() -> None:
    """Die with the controller, once we are its child (a new head is reparented to it when
    the middle process of the double fork has exited, which for a big process takes as long
    as the fork did; the head does not wait for that, it arms at its next request or
    checkpoint). Until then, EOF on its connection ends it."""
    if _link is not None and not _link.armed and os.getppid() == _link.controller_pid:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _link.armed = True
        if os.getppid() != _link.controller_pid:  # it died before the prctl took effect
            os._exit(0)


def _reap_children() -> None:
    """Reap checkpoints of ours that the controller evicted (they are our children)."""
    for pid in list(_children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _children.remove(pid)


def _warn_cuda() -> None:
    with open("/proc/self/maps") as maps:
        if "libcuda.so" not in maps.read():
            return
    notify("cuda", once="cuda")


def _warn_threads() -> bool:
    """Say once which other threads are alive (they are not in a checkpoint); True if any."""
    others = process_state.other_threads()
    if others:
        names, pools = sorted(others), native.pools_loaded()
        notify("threads", names, once=f"threads:{','.join(names)}:{','.join(pools)}", pools=pools)
    return bool(others)
