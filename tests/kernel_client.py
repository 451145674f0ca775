"""Driving the forkpoint kernel as a notebook does: jupyter_client's KernelManager started on
the kernelspec ``forkpoint kernel install`` writes (in the test's own Jupyter path), and a
BlockingKernelClient. ``Cell`` is what one execute_request showed: its reply and its outputs.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from jupyter_client.blocking.client import BlockingKernelClient  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

TIMEOUT = 60.0
FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


@dataclass
class Cell:
    reply: dict[str, Any]
    outputs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reply["status"] == "ok"

    def stream(self, name: str = "stdout") -> str:
        return "".join(c["text"] for kind, c in self.outputs if kind == "stream" and c["name"] == name)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [c for k, c in self.outputs if k == kind]

    @property
    def error(self) -> dict[str, Any]:
        errors = self.of("error")
        assert errors, f"no error shown: {self.outputs}"
        return errors[-1]


class Notebook:
    """One kernel and its client."""

    def __init__(self, manager: KernelManager, client: BlockingKernelClient) -> None:
        self.km, self.kc = manager, client

    def run(
        self,
        code: str,
        cell_id: str | None = None,
        stdin: list[str | None] | None = None,
        timeout: float = TIMEOUT,
        on_output: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> Cell:
        """Execute ``code`` as a notebook cell (with the notebook's cell id, if given) and
        collect what it showed until the kernel is idle again (``on_output`` sees each as it
        comes)."""
        kc = self.kc
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": stdin is not None,
            "stop_on_error": False,
        }
        msg = kc.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
        kc.shell_channel.send(msg)
        cell = Cell(reply={})
        answers = list(stdin or [])
        while True:
            if stdin is not None:
                try:
                    request = kc.get_stdin_msg(timeout=0.01)
                    cell.outputs.append(("input_request", request["content"]))
                    answer = answers.pop(0) if answers else ""
                    if answer is None:  # the user interrupts instead of answering
                        self.km.interrupt_kernel()
                    else:
                        kc.input(answer)
                except queue.Empty:
                    pass
            try:
                out = kc.get_iopub_msg(timeout=0.05 if stdin is not None else timeout)
            except queue.Empty:
                if stdin is None:
                    raise AssertionError(f"no output for {timeout} s from {code!r}") from None
                continue
            if out["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind = out["msg_type"]
            if kind == "status" and out["content"]["execution_state"] == "idle":
                break
            if kind not in ("status", "execute_input"):
                cell.outputs.append((kind, out["content"]))
                if on_output is not None:
                    on_output(kind, out["content"])
        reply = kc.get_shell_msg(timeout=timeout)
        assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
        cell.reply = reply["content"]
        return cell

    def value(self, expr: str) -> str:
        cell = self.run(expr)
        assert cell.ok, cell.outputs
        results = cell.of("execute_result")
        assert results, cell.outputs
        return str(results[-1]["data"]["text/plain"])

    @property
    def kernel_pid(self) -> int:
        provisioner = self.km.provisioner
        assert provisioner is not None
        return int(provisioner.process.pid)  # type: ignore[attr-defined]

    def descendants(self) -> list[int]:
        import psutil

        return [p.pid for p in psutil.Process(self.kernel_pid).children(recursive=True)]


def install_spec(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernelspec in the test's own Jupyter path, by the CLI as a user installs it."""
    prefix = tmp / "jupyter-prefix"
    done = subprocess.run(
        [FORKPOINT, "kernel", "install", "--prefix", str(prefix)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")


def start(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notebook]:
    install_spec(tmp, monkeypatch)
    km = KernelManager(kernel_name="forkpoint")
    km.start_kernel(env=dict(os.environ))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        yield Notebook(km, kc)
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=False)
        km.cleanup_resources()
        km.context.destroy(linger=0)  # or its sockets warn when collected, in a later test
