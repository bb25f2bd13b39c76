"""A run's own notification settings, as given to ``POST /api/runs`` (``notify``) and ``scripthut run --notify``.

``{"on": "always" | "failure" | "never", "webhook": URL, "email": ADDRESS}``, every key optional:
what is left out comes from the owner's preferences (``/settings/notifications``). The email
address must be one the portal trusts for the owner (``runs.notify.trust``): the API answers
400 and ``scripthut run`` exits 2 naming it, and nothing is created.
"""

from __future__ import annotations

from typing import Any, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runs.notify.models import RunNotify
from runs.notify.trust import untrusted_reason
from runs.notify.webhook_url import url_problem
from runs.workflows.parse import Problem, WorkflowError


class NotifySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: Literal["always", "failure", "never"] | None = Field(
        default=None, description="When to notify about this run; default: your preference."
    )
    webhook: str | None = Field(
        default=None, max_length=2000, description="http(s) URL to POST JSON to (Slack incoming webhooks work)."
    )
    email: str | None = Field(
        default=None,
        max_length=254,
        description="Address to email instead of your account's: one you confirmed "
        "(/settings/notifications) or in a domain staff allow; any other is a 400.",
    )

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        problem = url_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value:
            try:
                validate_email(value)
            except DjangoValidationError:
                raise ValueError("not a valid email address") from None
        return value


class NotifyError(ValueError):
    """The ``--notify`` options are invalid; the message names every problem."""


def spec_from_options(on: str | None, webhook: str | None, email: str | None, owner: Any = None) -> NotifySpec | None:
    """``scripthut run --notify ON [--notify-webhook URL] [--notify-email ADDRESS]``; None if none given.

    With ``owner``, the email address must be one the portal trusts for them."""
    given = {k: v for k, v in {"on": on, "webhook": webhook, "email": email}.items() if v is not None}
    if not given:
        return None
    try:
        spec = NotifySpec.model_validate(given)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        raise NotifyError("; ".join(problems)) from None
    reason = untrusted_reason(owner, spec.email or "") if owner is not None else None
    if reason:
        raise NotifyError(f"email: {reason}")
    return spec


def refuse_untrusted_email(owner: Any, spec: NotifySpec | None) -> None:
    """A run's ``notify.email`` must be an address the portal trusts for its owner (a 400 otherwise)."""
    reason = untrusted_reason(owner, spec.email or "") if spec is not None else None
    if reason:
        raise WorkflowError(Problem(f"notify.email: {reason}", field="notify.email"))


def save_override(run: Any, spec: NotifySpec | None) -> None:
    """Store the run's own settings (call inside the transaction that creates the run)."""
    if spec is not None:
        RunNotify.objects.create(run=run, on=spec.on or "", email=spec.email or "", webhook_url=spec.webhook or "")
