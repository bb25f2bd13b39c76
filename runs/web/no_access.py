"""What a user who may use no backend is told instead of "nothing configured": what the
portal has, that none of it is theirs to use yet, and whom to ask (issue 21 #5)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from backends.models import Backend
from runs.access import usable_backends
from runs.models import PortalSettings, Viewer, Workflow


@dataclass(frozen=True)
class NoAccess:
    backends: int  # enabled backends the portal has
    workflows: int  # configured workflows
    contact: str  # whom to ask for access


def site_contact() -> str:
    """The site's contact for access (``settings.contact`` of the config), else the staff's
    email addresses, else a word on who they are."""
    contact = PortalSettings.load().contact
    if contact:
        return contact
    staff = User.objects.filter(is_active=True, is_staff=True).exclude(email="").order_by("email")
    emails = list(staff.values_list("email", flat=True).distinct()[:5])
    return ", ".join(emails) or "the portal's administrators (its staff)"


def no_access(user: Viewer) -> NoAccess | None:
    """Set when ``user`` may use no backend although the portal has some; None otherwise."""
    if usable_backends(user).exists():
        return None
    backends = Backend.objects.filter(enabled=True).count()
    if not backends:
        return None
    return NoAccess(backends, Workflow.objects.count(), site_contact())
