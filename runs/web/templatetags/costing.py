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
