"""The kernelspec: ``forkpoint kernel install`` writes it through jupyter_client, so that
JupyterLab, Notebook 7, VS Code and nbclient list "Python (forkpoint)".

``interrupt_mode`` is ``signal``: jupyter_client then signals the kernel's process group, which
holds the head. The debugger is off (the kernel has no debugpy: a debugger's threads would not
survive the head's forks).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

__all__ = ["NAME", "install", "spec"]

NAME = "forkpoint"


def spec(python: str | None = None) -> dict[str, object]:
    return {
        "argv": [python or sys.executable, "-m", "forkpoint.kernel", "-f", "{connection_file}"],
        "display_name": "Python (forkpoint)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }


def install(user: bool = False, prefix: str | None = None, name: str = NAME) -> str:
    """Install the kernelspec; returns the folder it went to."""
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        with open(os.path.join(folder, "kernel.json"), "w") as f:
            json.dump(spec(), f, indent=1)
        return str(KernelSpecManager().install_kernel_spec(folder, name, user=user, prefix=prefix))
