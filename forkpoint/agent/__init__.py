"""The agent: the part of forkpoint that runs inside the user's Python process.

It imports only the standard library and forkpoint's own protocol and channel modules:
anything heavier would show up in the user's ``sys.modules``, cost start-up time, or start
threads that a fork cannot copy.
"""

# First, before anything imports random: see rng.
from forkpoint.agent import rng as rng  # noqa: E402
