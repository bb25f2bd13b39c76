from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found

from runs.api.routes import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("scripthut_site.sso.urls")),
    path("api/", api.urls),
    path("health", include("runs.web.health")),
    path("metrics", include("runs.metrics.views")),
    path("", include("runs.web.urls")),
    path("", include("runs.notify.urls")),
    path("", include("sources.urls")),
    path("", include("backends.urls")),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A path no route matches: JSON under /api/ (what API clients read), else the page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": f"no such API path: {request.path[:200]}"}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
