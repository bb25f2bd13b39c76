"""``GET /jobs/stream``: the dashboard's changes as Server-Sent Events (the original's endpoint).

The stream listens on the same channel groups as the dashboard's websocket
(``runs.access.viewer_groups``), so a user hears only of runs they may see. ``?user=``
narrows it to one owner's runs, as on the dashboard. Each change is one ``task`` event
(or ``run`` when no task moved) whose data is JSON; a comment line every
KEEPALIVE_SECONDS keeps proxies from closing a quiet stream. Served by the ASGI server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from runs.access import viewer_groups
from runs.live import push as live

KEEPALIVE_SECONDS = 15.0


def _event(change: dict[str, Any]) -> str:
    kind = "task" if "task" in change else "run"
    return f"event: {kind}\ndata: {json.dumps(change, default=str)}\n\n"


async def _events(groups: list[str], owner: str) -> AsyncIterator[str]:
    layer = get_channel_layer()
    assert layer is not None  # CHANNEL_LAYERS is always configured (scripthut_site.settings)
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    seen: deque[str] = deque(maxlen=64)  # a staff owner is in two groups of one message
    ends = time.monotonic() + live.RECHECK_SECONDS  # the client reconnects and is checked again
    try:
        yield "retry: 3000\n: connected\n\n"
        while time.monotonic() < ends:
            try:
                wait = min(KEEPALIVE_SECONDS, max(ends - time.monotonic(), 0.0))
                message = await asyncio.wait_for(layer.receive(channel), wait)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if message.get("id") in seen or (owner and message.get("owner") != owner):
                continue
            seen.append(message.get("id", ""))
            for change in message.get("events", []):
                yield _event(change)
    finally:  # the client went away: Django cancels the stream
        for group in groups:
            await layer.group_discard(group, channel)


@require_GET
async def jobs_stream(request: HttpRequest) -> StreamingHttpResponse:
    user = await request.auser()
    groups = await database_sync_to_async(viewer_groups)(user)
    response = StreamingHttpResponse(_events(groups, request.GET.get("user", "")), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
