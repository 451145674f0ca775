"""Instrumentation for ``forkpoint run``: where checkpoints go (sites) and what an edit changed
(diff). Pure functions over source text and ASTs; imported by the agent, so standard library only.
"""
