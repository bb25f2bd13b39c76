"""What a scrape of ``/metrics`` reports, read from the database when it is scraped.

Every query is bounded by what is live, not by history: unfinished tasks (an index on
``state``), one row per backend, the outbox's pending rows.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from backends.models import Backend
from runs.engine.states import UNFINISHED
from runs.metrics import websockets
from runs.metrics.models import TickCounters
from runs.models import Notification, Task


class PortalCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        names = dict(Backend.objects.values_list("pk", "name"))
        yield from self._tasks(names)
        yield from self._backends()
        yield from self._ticks(names)
        outbox = GaugeMetricFamily("scripthut_notifications_pending", "Notifications waiting to be sent")
        outbox.add_metric([], Notification.objects.filter(state=Notification.State.PENDING).count())
        yield outbox
        clients = GaugeMetricFamily("scripthut_websocket_clients", "Open websockets of this web process")
        clients.add_metric([], websockets.count())
        yield clients

    def _tasks(self, names: dict[int, str]) -> Iterator[Metric]:
        help_text = "Unfinished tasks by backend and state"
        tasks = GaugeMetricFamily("scripthut_tasks", help_text, labels=["backend", "state"])
        unfinished = Task.objects.filter(state__in=UNFINISHED).values("run__backend_id", "state")
        for row in unfinished.annotate(n=Count("pk")).order_by():
            tasks.add_metric([names.get(row["run__backend_id"], str(row["run__backend_id"])), row["state"]], row["n"])
        yield tasks

    def _backends(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("scripthut_backend_up", "1 if the backend's last tick reached it", labels=["backend"])
        for name, status, enabled in Backend.objects.values_list("name", "status", "enabled"):
            if enabled:
                up.add_metric([name], 1 if status == Backend.Status.OK else 0)
        yield up

    def _ticks(self, names: dict[int, str]) -> Iterator[Metric]:
        labels = ["backend"]
        ticks = SummaryMetricFamily("scripthut_tick_seconds", "Ticks of each backend and their seconds", labels=labels)
        failed = "Ticks that failed or did not reach the backend"
        errors = CounterMetricFamily("scripthut_tick_errors", failed, labels=labels)
        last = GaugeMetricFamily("scripthut_tick_last_seconds", "Seconds of the backend's last tick", labels=labels)
        polls = SummaryMetricFamily("scripthut_poll_seconds", "Polls of each backend and their seconds", labels=labels)
        submits = SummaryMetricFamily("scripthut_submit_seconds", "Submit phases and their seconds", labels=labels)
        for row in TickCounters.objects.all():
            name = [names.get(row.backend_id, str(row.backend_id))]
            ticks.add_metric(name, count_value=row.ticks, sum_value=row.tick_seconds)
            errors.add_metric(name, row.tick_errors)
            last.add_metric(name, row.last_tick_seconds)
            polls.add_metric(name, count_value=row.polls, sum_value=row.poll_seconds)
            submits.add_metric(name, count_value=row.submits, sum_value=row.submit_seconds)
        yield from (ticks, errors, last, polls, submits)
