"""jupyter_kernel_test's protocol checks, for the forkpoint kernel: every message validated
against the messaging spec (kernel_info, stdout, stderr, completion, is_complete, the pager,
errors, execute_result, display_data, history, inspect, clear_output)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

jkt = pytest.importorskip("jupyter_kernel_test")

FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


class ForkpointKernelTests(jkt.KernelTests):  # type: ignore[misc]
    kernel_name = "forkpoint"
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(3)]", "result": "[0, 1, 4]"},
    ]
    code_display_data = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))",
            "mime": "text/latex",
        },
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    @classmethod
    def setUpClass(cls) -> None:
        cls._home = tempfile.mkdtemp(prefix="forkpoint-jkt-")
        prefix = os.path.join(cls._home, "prefix")
        done = subprocess.run(
            [FORKPOINT, "kernel", "install", "--prefix", prefix], capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        cls._saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "XDG_RUNTIME_DIR", "XDG_DATA_HOME")}
        os.environ["JUPYTER_PATH"] = os.path.join(prefix, "share", "jupyter")
        for var in ("XDG_RUNTIME_DIR", "XDG_DATA_HOME"):
            os.environ[var] = os.path.join(cls._home, var.lower())
            os.makedirs(os.environ[var], mode=0o700)
        super().setUpClass()
        cls._family = _descendants(cls.km)

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        cls.km.context.destroy(linger=0)
        for var, value in cls._saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        shutil.rmtree(cls._home, ignore_errors=True)
        import psutil

        left = [p for p in cls._family if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        assert not left, f"processes left after shutdown: {left}"


def _descendants(km: object) -> list[int]:
    import psutil

    pid = km.provisioner.process.pid  # type: ignore[attr-defined]
    return [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]
