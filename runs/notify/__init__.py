"""Notifications: an outbox written with the state change that causes it, sent by the worker.

- ``models``: preferences, per-run overrides and the ``Notification`` outbox rows.
- ``outbox``: ``enqueue`` (any event) and ``run_status_changed`` (a run's events).
- ``deliver``: the sender loop (claims, retries with backoff, ``failed`` after the last attempt).
- ``email`` / ``webhook``: the two channels.
"""
