"""``GET /metrics``: the Prometheus text format, for staff, a staff user's API token, or the
scraper's own bearer token (``SCRIPTHUT_METRICS_TOKEN``)."""

from __future__ import annotations

import hmac
import os

from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from runs.access import is_staff
from runs.metrics.collector import PortalCollector

registry = CollectorRegistry(auto_describe=False)
registry.register(PortalCollector())


def may_scrape(request: HttpRequest) -> bool:
    if is_staff(request.user):
        return True
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if not credential:
        return False
    if scheme == "Bearer":
        wanted = os.environ.get("SCRIPTHUT_METRICS_TOKEN", "")
        return bool(wanted) and hmac.compare_digest(credential.encode(), wanted.encode())
    if scheme == "Token":
        user = authenticate(request, api_token=credential)
        return is_staff(user)
    return False


@login_not_required  # answered with a 401 here rather than a redirect to the login page
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not may_scrape(request):
        refused = HttpResponse("staff, a staff user's API token or SCRIPTHUT_METRICS_TOKEN\n", status=401)
        refused["WWW-Authenticate"] = 'Bearer realm="scripthut metrics"'
        return refused
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


urlpatterns = [path("", metrics, name="metrics")]
