"""{% failed_notifications_count %}: for staff, how many notifications could not be delivered."""

from __future__ import annotations

from typing import Any

from django import template

from runs.access import is_staff
from runs.notify.models import Notification

register = template.Library()


@register.simple_tag(takes_context=True)
def failed_notifications_count(context: dict[str, Any]) -> int:
    if not is_staff(context.get("user")):
        return 0
    return Notification.objects.filter(state=Notification.State.FAILED).count()
