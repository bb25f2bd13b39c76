"""Prometheus metrics for operators: ``GET /metrics`` (staff, a staff user's API token, or
the scraper's ``SCRIPTHUT_METRICS_TOKEN``).

What a scrape shows is read when it is scraped (:mod:`runs.metrics.collector`): unfinished
tasks by backend and state, backend status, the notification outbox, the websocket clients
of this web process; and the tick counters every ticking process adds to in the database
(:mod:`runs.metrics.ticks`), so that Celery workers on other hosts count too.
"""
