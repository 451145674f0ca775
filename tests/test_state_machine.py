"""A hypothesis state machine: random inputs, failures and rewinds against a model.

The model is a dict of what each variable must hold; every checkpoint id maps to the model
as it was when that checkpoint was taken. A rewind must bring exactly that back, and a failed
input must leave no trace.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from forkpoint.controller import Controller

NAMES = st.sampled_from(["a", "b", "c"])


class ShellModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.null = os.open(os.devnull, os.O_RDWR)
        self.c = Controller(stdio=(self.null, self.null, self.null), max_checkpoints=1000)
        self.c.start()
        self.model: dict[str, object] = {"items": []}
        self.ok("items = []")
        self.snapshots: dict[int, dict[str, object]] = {self.c.current: self.copy()}

    def copy(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self.model.items()}

    def ok(self, code: str) -> None:
        result = self.c.execute(code)
        assert result.status == "ok", result
        assert result.checkpoint is not None

    def record(self) -> None:
        self.snapshots[self.c.current] = self.copy()

    @rule(name=NAMES, n=st.integers(-5, 5))
    def assign(self, name: str, n: int) -> None:
        self.ok(f"{name} = {n}")
        self.model[name] = n
        self.record()

    @rule(name=NAMES, n=st.integers(-5, 5))
    def add(self, name: str, n: int) -> None:
        if name in self.model:
            self.ok(f"{name} += {n}")
            self.model[name] = int(self.model[name]) + n  # type: ignore[call-overload]
        else:
            result = self.c.execute(f"{name} += {n}")
            assert result.status == "error" and "NameError" in (result.traceback or "")
        self.record()

    @rule(n=st.integers(0, 9))
    def append(self, n: int) -> None:
        self.ok(f"items.append({n})")
        self.model["items"].append(n)  # type: ignore[attr-defined]
        self.record()

    @rule(name=NAMES, n=st.integers(0, 9))
    def fail_half_way(self, name: str, n: int) -> None:
        before = self.c.current
        result = self.c.execute(f"items.append({n}); {name} = {n}; raise ValueError('half way')")
        assert result.status == "error" and result.rolled_back_to == before

    @precondition(lambda self: len(self.snapshots) > 1)
    @rule(data=st.data())
    def rewind(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(sorted(self.snapshots)))
        rewound = self.c.rewind(target)
        assert rewound.checkpoint == target and rewound.continued is None
        self.model = {k: list(v) if isinstance(v, list) else v for k, v in self.snapshots[target].items()}

    @invariant()
    def head_matches_model(self) -> None:
        ok, text = self.c.evaluate(
            "{k: v for k, v in sorted(globals().items()) if k in ('a', 'b', 'c', 'items')}"
        )
        assert ok, text
        assert text == repr(dict(sorted(self.model.items())))

    def teardown(self) -> None:
        self.c.close()
        os.close(self.null)


ShellModel.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_shell_model = ShellModel.TestCase
