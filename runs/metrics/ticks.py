"""Timing a tick and its poll and submit phases, saved in one UPDATE when the tick ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.db import DatabaseError
from django.db.models import F

from runs.metrics.models import TickCounters

PHASES = ("poll", "submit")


@dataclass
class TickTimer:
    """The seconds one tick spent, in all and per timed phase (``phase()``)."""

    started: float = field(default_factory=time.monotonic)
    failed: bool = False
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.calls[name] += 1
            self.seconds[name] += time.monotonic() - began

    def save(self, backend_id: int) -> None:
        """Add this tick to the backend's counters; a counter that cannot be saved is
        not worth failing a tick for."""
        took = time.monotonic() - self.started
        values = {
            "ticks": F("ticks") + 1,
            "tick_errors": F("tick_errors") + int(self.failed),
            "tick_seconds": F("tick_seconds") + took,
            "last_tick_seconds": took,
            **{f"{name}s": F(f"{name}s") + self.calls[name] for name in PHASES},
            **{f"{name}_seconds": F(f"{name}_seconds") + self.seconds[name] for name in PHASES},
        }
        try:
            if not TickCounters.objects.filter(backend_id=backend_id).update(**values):
                TickCounters.objects.get_or_create(backend_id=backend_id)
                TickCounters.objects.filter(backend_id=backend_id).update(**values)
        except DatabaseError:
            pass


# The tick being timed in this thread (a context variable: ticks run in several threads).
_current: ContextVar[TickTimer | None] = ContextVar("scripthut_tick_timer", default=None)


@contextmanager
def timing_tick(backend_id: int) -> Iterator[TickTimer]:
    """Time a tick of this backend; the caller sets ``timer.failed`` if it failed."""
    timer = TickTimer()
    token = _current.set(timer)
    try:
        yield timer
    finally:
        _current.reset(token)
        timer.save(backend_id)


@contextmanager
def timed(phase: str) -> Iterator[None]:
    """Time ``phase`` for the tick being timed (nothing outside a tick)."""
    timer = _current.get()
    if timer is None:
        yield
        return
    with timer.phase(phase):
        yield
