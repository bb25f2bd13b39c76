"""Numbers users give that the database must be able to store, checked where they come in."""

from __future__ import annotations

PG_INT_MAX = 2_147_483_647  # integer columns (Run.max_concurrent); PostgreSQL refuses more


def whole_number(raw: str, name: str, minimum: int, maximum: int = PG_INT_MAX) -> int:
    """A whole number a page or form was sent as text; ValueError naming ``name`` and the range.

    Checked before ``int()``: 5,000 digits would otherwise be a ValueError of Python's own
    (or a number no column holds), i.e. a 500 instead of a 400.
    """
    text = raw.strip()
    # ASCII digits only: "²" is a digit to str.isdigit but not to int().
    if text.isascii() and text.isdigit() and len(text) <= len(str(maximum)) and minimum <= int(text) <= maximum:
        return int(text)
    shown = text if len(text) <= 40 else text[:40] + "…"
    raise ValueError(f"{name} must be a whole number from {minimum} to {maximum:,}, not {shown!r}")


def form_max_concurrent(raw: str) -> int | None:
    """A page form's max concurrent value: None when left empty; ValueError naming the field."""
    if not raw.strip():
        return None
    return whole_number(raw, "max_concurrent", 1)
