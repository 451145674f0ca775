"""Native runtimes after a rewind (issue 13): real libraries, real forks."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from forkpoint.controller import Controller
from forkpoint.controller.results import ExecResult

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
