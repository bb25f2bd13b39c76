"""``scripthut deliver_notifications [--until-idle]``: send due notifications from the outbox.

The Celery beat task and the embedded ticker already do this; the command is for a cron job
or a one-off after fixing a receiver, and for running several senders side by side.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs.notify.deliver import deliver_due


class Command(BaseCommand):
    help = "Send the notifications that are due (one pass, or until none is left)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--until-idle", action="store_true", help="repeat until a pass sends nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        while sent := deliver_due():
            total += sent
            if not options["until_idle"]:
                break
        self.stdout.write(f"{total} notification(s) sent")
