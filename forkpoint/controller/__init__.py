"""The controller: the engine that owns the checkpoint tree and the agents' connections.

It never writes to a terminal: front ends (the shell, the CLI) call ``Controller``'s methods
and render the results and typed events (``forkpoint.controller.events``) it hands them.
"""

from forkpoint.controller import events
from forkpoint.controller.controller import Controller, Output, default_budget
from forkpoint.controller.results import (
    Change,
    ChangeKind,
    ExecResult,
    MemoryReport,
    Resumed,
    Rewound,
    Saved,
    SaveProgress,
    Status,
)
from forkpoint.controller.save_policy import SaveScope
from forkpoint.controller.script import Script, read_script
from forkpoint.controller.supervisor import Death, DeathKind

__all__ = [
    "Change",
    "ChangeKind",
    "Controller",
    "Death",
    "DeathKind",
    "ExecResult",
    "MemoryReport",
    "Output",
    "Resumed",
    "Rewound",
    "SaveProgress",
    "SaveScope",
    "Saved",
    "Script",
    "Status",
    "default_budget",
    "events",
    "read_script",
]
