"""The Jupyter kernel: ``kernel`` (the launched process, a front end of the engine), ``headshell``
(the head's IPython shell), ``magics`` (what the kernel answers itself), ``spec`` (install).

The Jupyter packages are the ``jupyter`` extra; nothing here is imported by the shell or the
agent unless a notebook runs.
"""

# Magics the kernel itself answers; in a cell with other code they cannot run (the head says why).
ENGINE_MAGICS = (
    "checkpoints",
    "tree",
    "rewind",
    "undo",
    "label",
    "diff",
    "mem",
    "save",
    "restore",
    "sessions",
    "autorewind",
)
