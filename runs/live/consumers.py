"""Websockets of the live pages: each joins the channel groups ``runs.live.push`` sends to.

A socket is let in only as its user would be let into the page, and joins the groups
``runs.access`` names: the run page's ``run_page_groups`` (none, so refused, for a run its
user may not see), the runs list's and the dashboard's ``viewer_groups``. Nothing is read
from the socket: pages only listen.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from runs.access import run_page_groups, viewer_groups
from runs.live import push as live
from runs.metrics import websockets
from runs.models import Viewer

REFUSED = 4403  # close code of a socket its user may not open
RESTART = 1012  # "service restart": the page reconnects at once, and is checked again


class LiveConsumer(AsyncWebsocketConsumer):
    """Joins ``groups()`` once let in; forwards each pushed message's ``field`` to the page."""

    field = "frames"  # of the pushed message: the HTML frames this page is sent

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=REFUSED)
            return
        self.joined: list[str] = await database_sync_to_async(self.groups_for)(user)
        if not self.joined:
            await self.close(code=REFUSED)
            return
        self.seen: deque[str] = deque(maxlen=64)  # a staff owner is in two groups of one message
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        websockets.opened()
        self.counted = True
        self.recheck = asyncio.get_running_loop().call_later(live.RECHECK_SECONDS, self._expire)

    def _expire(self) -> None:
        self.expiry = asyncio.ensure_future(self.close(code=RESTART))

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            websockets.closed()
            self.counted = False
        if hasattr(self, "recheck"):
            self.recheck.cancel()
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    def groups_for(self, user: Viewer) -> list[str]:
        raise NotImplementedError

    def wanted(self, message: dict[str, Any]) -> bool:
        return True

    async def live_push(self, message: dict[str, Any]) -> None:
        if message["id"] in self.seen or not self.wanted(message):
            return
        self.seen.append(message["id"])
        for frame in message.get(self.field, []):
            if frame.strip():
                await self.send(text_data=frame)


class RunConsumer(LiveConsumer):
    """``/runs/<id>/live``: the run page's rows, counts and bars."""

    def groups_for(self, user: Viewer) -> list[str]:
        return run_page_groups(user, self.scope["url_route"]["kwargs"]["run_id"])


class RunListConsumer(LiveConsumer):
    """``/runs/live``: the runs list's rows."""

    field = "runs_frames"

    def groups_for(self, user: Viewer) -> list[str]:
        return viewer_groups(user)


class JobsConsumer(RunListConsumer):
    """``/live``: the dashboard's ScriptHut job rows (of the user it is narrowed to, if any)."""

    field = "jobs_frames"

    def wanted(self, message: dict[str, Any]) -> bool:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        selected = query.get("user", [""])[0]
        return not selected or message.get("owner") == selected
