from django.contrib import admin
from django.urls import include, path

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
