"""``/usage`` and ``/usage.csv``: cost and CPU-hours per user, backend and month."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from runs.costing.estimate import price_book
from runs.costing.usage import DEFAULT_MONTHS, MAX_MONTHS, usage_context, usage_csv


def _months(request: HttpRequest) -> int | HttpResponse:
    raw = request.GET.get("months", str(DEFAULT_MONTHS))
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_MONTHS:
        message = f"months must be a whole number from 1 to {MAX_MONTHS}"
        return HttpResponse(message, status=400, content_type="text/plain")
    return int(raw)


@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    months = _months(request)
    if isinstance(months, HttpResponse):
        return months
    context = usage_context(request.user, months)
    book = price_book()
    context |= {"priced": book is not None, "book": book, "month_choices": (1, 3, 6, 12, 24)}
    return render(request, "runs/costing/usage.html", context)


@require_GET
def usage_download(request: HttpRequest) -> HttpResponse:
    months = _months(request)
    if isinstance(months, HttpResponse):
        return months
    body = usage_csv(request.user, months, priced=price_book() is not None)
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="scripthut-usage-{months}-months.csv"'
    return response
