"""Loading forkpoint's pytest plugin (``under_pytest``) into a program that is pytest, whose
command line is the user's: through ``PYTEST_PLUGINS``, the one door pytest opens for it, put
back as soon as pytest has read it so the tests' own subprocesses never see ours. Kept apart from
the plugin, which imports pytest: this runs before the program does.

Imported by the agent: standard library only.
"""

from __future__ import annotations

import os

__all__ = ["PLUGIN", "load_plugin", "plugins_read"]

PLUGIN = "forkpoint.agent.under_pytest"
_before: str | None = None  # PYTEST_PLUGINS as it was before forkpoint's plugin joined


def load_plugin() -> None:
    global _before
    _before = os.environ.get("PYTEST_PLUGINS")
    os.environ["PYTEST_PLUGINS"] = ",".join(p for p in (_before, PLUGIN) if p)


def plugins_read() -> None:
    """pytest has read PYTEST_PLUGINS: put it back as it was."""
    if _before is None:
        os.environ.pop("PYTEST_PLUGINS", None)
    else:
        os.environ["PYTEST_PLUGINS"] = _before
