"""``python -m forkpoint.agent``: start a head for a controller (see agent.head)."""

from forkpoint.agent.head import main

main()
