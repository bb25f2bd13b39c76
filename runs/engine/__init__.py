"""The run engine: what moves tasks from pending to finished.

Start with :mod:`runs.engine.states` (the state machine: every state, the allowed moves
and the one helper that makes them), then :mod:`runs.engine.tick`, whose phases each
have a module of their own: reconcile, cancel, poll, submit.
"""
