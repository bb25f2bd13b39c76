"""Numbers users give that the database must be able to store, checked where they come in."""

from __future__ import annotations

PG_INT_MAX = 2_147_483_647  # integer columns (Run.max_concurrent); PostgreSQL refuses more


def form_max_concurrent(raw: str) -> int | None:
    """A page form's max concurrent value: None when left empty; ValueError naming the field."""
    text = raw.strip()
    if not text:
        return None
    # ASCII digits only: "²" is a digit to str.isdigit but not to int().
    if text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= PG_INT_MAX:
        return int(text)
    shown = text if len(text) <= 40 else text[:40] + "…"
    raise ValueError(f"max_concurrent must be a whole number from 1 to {PG_INT_MAX:,}, not {shown!r}")
