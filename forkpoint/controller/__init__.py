"""The controller: owns the checkpoint tree and the agents' connections; emits events.

It never writes to a terminal: front ends (the shell) call its methods and render the
results and events it hands them.
"""

from forkpoint.controller.controller import (
    Change,
    Controller,
    Event,
    ExecResult,
    MemoryReport,
    Resumed,
    Rewound,
    SaveProgress,
)
from forkpoint.controller.script import Script, read_script

__all__ = [
    "Change",
    "Controller",
    "Event",
    "ExecResult",
    "MemoryReport",
    "Resumed",
    "Rewound",
    "SaveProgress",
    "Script",
    "read_script",
]
