"""An aiosmtpd handler for the kill test: it stores each message, then holds the reply to the
first one for a minute, as a slow mail server would; the sender is killed meanwhile.

    python -m aiosmtpd -n -l 127.0.0.1:PORT -c tests.smtp_stall.StallFirst MAILDIR
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiosmtpd.handlers import Mailbox


class StallFirst(Mailbox):
    def __init__(self, mail_dir: str):
        super().__init__(Path(mail_dir))
        self.seen = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.handle_message(self.prepare_message(session, envelope))
        self.seen += 1
        if self.seen == 1:
            await asyncio.sleep(60)
        return "250 OK"
