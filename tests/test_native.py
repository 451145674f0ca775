"""Native runtimes after a rewind (issue 13): real libraries, real forks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from forkpoint.controller import Controller
from forkpoint.controller.events import CudaInUse, Event, StalledInPool, ThreadsLeftOut, UnsafePool
from forkpoint.controller.results import ExecResult
from forkpoint.controller.stall import QUIET
from forkpoint.shell.messages import event_text

pytest.importorskip("sklearn")

FIT = (
    "m = H(max_iter=15, random_state=0).fit(X, y); p = m.predict_proba(X[:50]).round(6).tolist(); "
    "threads = len(os.listdir('/proc/self/task'))"
)


@pytest.fixture
def controller() -> Iterator[Controller]:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null)) as c:
            yield c
    finally:
        os.close(null)


def within(c: Controller, code: str, seconds: float = 60) -> ExecResult:
    """``c.execute(code)``, failing the test (not hanging the suite) if it does not return."""
    done: list[ExecResult] = []
    worker = threading.Thread(target=lambda: done.append(c.execute(code)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert done, f"{code!r} did not return in {seconds:.0f} s: a rewound head hangs in it"
    assert done[0].status == "ok", done[0].traceback
    return done[0]


def test_openmp_fits_after_a_rewind_in_parallel_and_alike(controller: Controller) -> None:
    """scikit-learn's HistGradientBoosting runs on its own libgomp: after a rewind the first
    parallel region used to wait forever on the workers the fork lost."""
    c = controller
    setup = (
        "import os, numpy as np; from sklearn.ensemble import HistGradientBoostingClassifier as H; "
        "rng = np.random.default_rng(0); X = rng.random((3000, 12)); "
        "y = (X[:, 0] + X[:, 1] > 1).astype(int); "
        "H(max_iter=3).fit(X, y)"  # its pool has run: the checkpoint after this is forked with it
    )
    base = within(c, setup).checkpoint
    within(c, FIT)
    ok, before = c.evaluate("(p, threads)")
    assert ok
    c.rewind(base)
    within(c, FIT)
    ok, after = c.evaluate("(p, threads)")
    assert ok
    assert eval(before)[0] == eval(after)[0]  # the same model as before the rewind
    assert eval(after)[1] > 1  # its workers run again: the fit was parallel, not serial
    c.rewind(base)  # a checkpoint of a checkpoint's head, rewound again
    within(c, FIT)


BLUR = (
    "out = cv2.GaussianBlur(img, (31, 31), 0); digest = int(out.sum()); "
    "workers = len(os.listdir('/proc/self/task')) - 1"
)


def test_opencv_keeps_its_workers_in_a_rewound_head(controller: Controller) -> None:
    """OpenCV's pool ran single-threaded in a forked child: its vector still held the workers
    the fork lost. Its threads are counted in /proc (no timing): after a parallel call in a
    rewound head, and in a head rewound to a checkpoint that a rewound head took."""
    pytest.importorskip("cv2")
    c = controller
    setup = (
        "import os, time, numpy as np, cv2; cv2.setNumThreads(2); "
        "img = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8); "
        "cv2.GaussianBlur(img, (31, 31), 0)"  # the pool has run before the checkpoint
    )
    base = within(c, setup).checkpoint
    within(c, BLUR)
    ok, before = c.evaluate("(digest, workers)")
    assert ok and eval(before)[1] >= 1, before  # the parent's own workers, for comparison
    c.rewind(base)
    within(c, BLUR)
    ok, after = c.evaluate("(digest, workers)")
    assert ok
    assert eval(after) == eval(before)  # the same image, with as many workers
    taken = within(c, "pass").checkpoint  # a checkpoint of a rewound head
    c.rewind(taken)
    within(c, BLUR)
    ok, again = c.evaluate("(digest, workers)")
    assert ok and eval(again) == eval(before)
    c.events.clear()
    within(c, "import threading; threading.Thread(target=time.sleep, args=(30,), daemon=True).start()")
    told = [e for e in c.events if isinstance(e, ThreadsLeftOut)]
    assert told and told[0].pools == ("OpenCV",)  # a thread inside it at a fork defeats the reset
    assert "OpenCV" in event_text(told[0])


POLARS_SETUP = (
    "import os, numpy as np, polars as pl; "
    "df = pl.DataFrame({'a': np.arange(200_000) % 97, 'b': np.arange(200_000) / 7}); "
    "total = df.group_by('a').agg(pl.col('b').sum()).sort('a')['b'][0]"  # its pool runs now
)


def test_polars_pool_is_named_at_the_checkpoint_and_a_stall_in_it_explained() -> None:
    """polars' rayon pool cannot be made safe: the checkpoint taken while it runs says so once,
    and in a head rewound to it a polars call that waits for good is explained after a few
    seconds without CPU; the user (here the test, as a second Ctrl-C would) kills the head and
    is rolled back."""
    pytest.importorskip("polars")
    events: list[Event] = []
    stalls: list[tuple[StalledInPool, float]] = []
    heads: list[int] = []

    def seen(event: Event) -> None:
        events.append(event)
        if isinstance(event, StalledInPool) and not stalls:
            stalls.append((event, time.monotonic()))
            os.kill(heads[-1], signal.SIGKILL)

    null = os.open(os.devnull, os.O_RDWR)
    try:
        with Controller(stdio=(null, null, null), on_event=seen) as c:
            base = within(c, POLARS_SETUP).checkpoint
            within(c, "x = 1")
            told = [e for e in events if isinstance(e, UnsafePool)]
            assert [e.pool for e in told] == ["polars"]  # once, not at every checkpoint
            assert "subprocess" in event_text(told[0])
            c.rewind(base)
            assert within(c, "y = total * 2").status == "ok"  # the rest of the head runs
            heads.append(c.head_pid or 0)
            started = time.monotonic()
            done: list[ExecResult] = []
            worker = threading.Thread(
                target=lambda: done.append(c.execute("df.group_by('a').agg(pl.col('b').sum())")),
                daemon=True,
            )
            worker.start()
            worker.join(60)
            if not done:  # no word in 60 s: end the hang ourselves, then fail
                os.kill(heads[-1], signal.SIGKILL)
                worker.join(30)
            assert stalls, "a polars call in a rewound head hung, and nothing said why"
            result = done[0]
            stall, when = stalls[0]
            assert stall.pools == ("polars",) and when - started >= QUIET
            assert "polars" in event_text(stall) and "Ctrl-C" in event_text(stall)
            assert result.status == "died" and result.rolled_back_to is not None
            ok, text = c.evaluate("y == total * 2")
            assert ok and text == "True"
    finally:
        os.close(null)


def _gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=60).returncode == 0


CUDA_SETUP = """
import ctypes
cu = ctypes.CDLL("libcuda.so.1")
def check(rc): assert rc == 0, f"CUDA error {rc}"
check(cu.cuInit(0))
dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
check(cu.cuDeviceGet(ctypes.byref(dev), 0))
check(cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev))
check(cu.cuMemAlloc_v2(ctypes.byref(ptr), 4096))
sent = (ctypes.c_ubyte * 4096)(*[i % 251 for i in range(4096)])
check(cu.cuMemcpyHtoD_v2(ptr, sent, 4096))
def device_bytes():
    back = (ctypes.c_ubyte * 4096)()
    check(cu.cuMemcpyDtoH_v2(back, ptr, 4096))
    return bytes(back) == bytes(sent)
"""


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu(), reason="no NVIDIA GPU here (nvidia-smi does not work)")
def test_cuda_head_is_warned_and_its_device_state_survives_cuda_checkpoint(controller: Controller) -> None:
    """Where a GPU is lent: a head that made a CUDA context is warned at its checkpoint (a fork
    copies no device state), and the building block of the CUDA path, NVIDIA's cuda-checkpoint
    moving the head's device memory to host memory and back, leaves it intact
    (docs/architecture.md, "CUDA")."""
    c = controller
    within(c, CUDA_SETUP)
    within(c, "pass")
    assert any(isinstance(e, CudaInUse) for e in c.events)
    assert c.evaluate("device_bytes()") == (True, "True")
    tool = shutil.which("cuda-checkpoint")
    if tool is None:
        pytest.skip("cuda-checkpoint is not on PATH (NVIDIA driver 550 or later ships it)")
    for _ in range(2):  # suspend (device memory into host memory), then resume
        done = subprocess.run([tool, "--toggle", "--pid", str(c.head_pid)], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert c.evaluate("device_bytes()") == (True, "True")
