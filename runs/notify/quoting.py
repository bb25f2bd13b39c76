"""User-chosen text in the portal's messages: quoted and cut, never passing for the portal's words."""

from __future__ import annotations

import re

NAME_IN_SUBJECT = 40  # characters of a run's name in a subject


def quoted(text: str, limit: int = NAME_IN_SUBJECT) -> str:
    """User-chosen text as a message may show it: one line, cut to ``limit`` characters, in quotes.

    A run's name is its owner's choice: quoted and cut, it cannot pass for the portal's own
    words ("URGENT: your account is locked, log in at ...") in a subject or a body."""
    line = re.sub(r"[\x00-\x1f\x7f\s]+", " ", text).strip().replace('"', "'")
    if len(line) > limit:
        line = line[: limit - 3].rstrip() + "..."  # ASCII: a subject stays readable as it is sent
    return f'"{line}"'
