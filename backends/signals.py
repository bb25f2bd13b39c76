"""Signals adapters send to the engine's workers."""

from __future__ import annotations

from django.dispatch import Signal

# Sent with ``backend_id`` by an adapter that learns of a job's end between ticks (the local
# backend: its runner exited); runs/workers/ticker.py ticks that backend at once.
job_ended = Signal()
