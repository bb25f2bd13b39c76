"""A Batch job's log: one CloudWatch Logs stream holding stdout and stderr together.

Read forward from the start with ``get_log_events`` and ``nextForwardToken`` (the end
is when the token comes back unchanged), keeping the last ``max_bytes``. The token and
the tail are remembered per stream, so following a running job on its log page only
fetches the events written since the last look.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from backends.aws.clients import aws_errors, error_code

MERGED_STREAMS_NOTE = (
    "AWS Batch writes a job's standard output and standard error to one CloudWatch log stream: "
    "both are in the output tab."
)
FOLLOWED_STREAMS = 64  # streams whose position is remembered (least recently read dropped)


@dataclass
class Tail:
    token: str | None = None  # where the next read starts; None: from the head
    text: str = ""  # the last bytes read so far
    limit: int = 0  # the max_bytes ``text`` was kept for
    lock: threading.Lock = field(default_factory=threading.Lock)


class LogReader:
    def __init__(self, logs_client: Any):
        self.logs = logs_client
        self._tails: OrderedDict[tuple[str, str], Tail] = OrderedDict()
        self._lock = threading.Lock()

    def _tail(self, group: str, stream: str, max_bytes: int) -> Tail:
        with self._lock:
            key = (group, stream)
            tail = self._tails.pop(key, None)
            if tail is None or tail.limit < max_bytes:
                tail = Tail(limit=max_bytes)
            self._tails[key] = tail
            while len(self._tails) > FOLLOWED_STREAMS:
                self._tails.popitem(last=False)
            return tail

    def read(self, group: str, stream: str, max_bytes: int) -> str:
        """The last ``max_bytes`` of the stream; FileNotFoundError if it does not exist yet."""
        tail = self._tail(group, stream, max_bytes)
        with tail.lock:
            while True:
                page = self._page(group, stream, tail.token)
                lines = [str(event.get("message", "")).rstrip("\n") for event in page.get("events", [])]
                if lines:
                    tail.text = _last_bytes(tail.text + "\n".join(lines) + "\n", tail.limit)
                token = page.get("nextForwardToken")
                if not token or token == tail.token:
                    break
                tail.token = token
            return _last_bytes(tail.text, max_bytes)

    def _page(self, group: str, stream: str, token: str | None) -> dict[str, Any]:
        arguments: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            arguments["nextToken"] = token
        try:
            with aws_errors(f"CloudWatch Logs {group}"):
                return dict(self.logs.get_log_events(**arguments))
        except Exception as exc:
            if error_code(exc.__cause__ or exc) == "ResourceNotFoundException":
                raise FileNotFoundError(f"log stream {stream} in {group} does not exist yet") from None
            raise


def _last_bytes(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[-max_bytes:].decode(errors="ignore")
