"""Persistence: CRIU (finding it, what it can do here) and the store of saved sessions."""
