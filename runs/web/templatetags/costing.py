"""Money on the pages: ``{{ task.cost|usd }}``."""

from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()

WASTE_HELP = (
    "Waste: the part of the cost paid for CPUs and memory asked for and not used "
    "(cost minus what the task would have cost had it asked for its CPUs × CPU efficiency and its peak memory)."
)


@register.filter
def hours(value: float | None) -> str:
    """CPU-hours: ``1,234.5``; under 10, 2 significant digits (``0.0043``: short tasks do
    not all read ``0.0``); ``0`` only for nothing at all."""
    if value is None:
        return ""
    if value == 0:
        return "0"
    if value < 0.0001:
        return "<0.0001"
    if value < 10:
        return f"{value:.2g}" if "e" not in f"{value:.2g}" else f"{value:.4f}"
    return f"{value:,.1f}"


@register.filter
def usd(value: Decimal | float | None) -> str:
    """``$12.34``; under a dollar 2 significant digits (``$0.0043``, ``$0.085``), large ones drop cents."""
    if value is None:
        return ""
    amount = Decimal(value)
    if amount == 0:
        return "$0"
    if abs(amount) < Decimal("0.0001"):
        return "<$0.0001"
    if abs(amount) < 1:
        return f"${amount:.2g}"
    if abs(amount) >= 1000:
        return f"${amount:,.0f}"
    return f"${amount:,.2f}"


@register.simple_tag
def waste_help() -> str:
    return WASTE_HELP
