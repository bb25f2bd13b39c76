"""API operations about the caller: who the token is, and what /usage shows them."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query

from runs.access import usable_backends
from runs.api.base import api, caller
from runs.api.schemas import ErrorOut, MeOut, UsageOut, UsageQuery
from runs.api.token_auth import token_scope
from runs.costing.usage import usage_context


@api.get("/me", response={200: MeOut, 401: ErrorOut}, tags=["account"])
def get_me(request: HttpRequest) -> dict[str, Any]:
    """Who the token is: name, groups, the backends they may use, and the token's scope."""
    user = caller(request)
    return {
        "username": user.get_username(),
        "email": user.email,
        "is_staff": user.is_staff,
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "backends": list(usable_backends(user).order_by("name").values_list("name", flat=True)),
        "token_scope": token_scope(request),
    }


@api.get("/usage", response={200: UsageOut, 400: ErrorOut, 401: ErrorOut}, tags=["account"])
def get_usage(request: HttpRequest, query: Query[UsageQuery]) -> dict[str, Any]:
    """Cost and CPU-hours per user, backend and month, as /usage shows them: the caller's own
    (staff: everyone's), over the last `months` months."""
    context = usage_context(caller(request), query.months)
    return {key: context[key] for key in ("months", "everyone", "total", "by_user", "by_backend", "by_month")}
