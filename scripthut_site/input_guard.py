"""Requests refused before any view reads them: a body over the size limit (413) and a
URL with a NUL byte (400: PostgreSQL refuses NUL in any text it is asked to compare).

The limit is Django's DATA_UPLOAD_MAX_MEMORY_SIZE, set from ``SCRIPTHUT_MAX_BODY_MB``.
Left to Django, an API body over it is a 500 and a form post a bare 400.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


def body_limit() -> int | None:
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_big_message(request: HttpRequest) -> str:
    limit = body_limit() or 0
    sent = request.META.get("CONTENT_LENGTH") or ""
    size = f" of {int(sent):,} bytes" if sent.isdigit() else ""
    return (
        f"request body{size} is over the limit of {limit / 1024 / 1024:g} MiB ({limit:,} bytes); "
        "the portal's SCRIPTHUT_MAX_BODY_MB sets it"
    )


def refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    """The API's ``{"error": ...}`` under /api/, plain text elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


class InputGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = request.META.get("CONTENT_LENGTH") or ""
        limit = body_limit()
        if limit is not None and sent.isdigit() and int(sent) > limit:
            return refuse(request, 413, too_big_message(request))
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "%00" in query or "\x00" in query:
            return refuse(request, 400, "the URL must not contain NUL bytes (%00)")
        return self.get_response(request)
