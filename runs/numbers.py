"""Numbers for people: few digits, no trailing zeros (shared by templates and runs.costing.efficiency)."""

from __future__ import annotations


def short_number(value: float) -> str:
    """``4``, ``3.5``, ``0.3``, ``0.05``, ``12.5``, ``256``."""
    if value >= 100:
        return f"{value:.0f}"
    text = f"{value:.1f}" if value >= 0.1 or value == 0 else f"{value:.2f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def gigabytes(mb: float | None) -> str:
    """Megabytes as a short number of gigabytes (``4``, ``0.3``); empty when unknown."""
    if mb is None:
        return ""
    return short_number(max(mb, 0) / 1024)
