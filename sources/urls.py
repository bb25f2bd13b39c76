from django.urls import path

from sources import views

urlpatterns = [
    path("sources", views.source_list, name="source_list"),
    path("sources/<str:name>/sync", views.source_sync, name="source_sync"),
    path("sources/<str:name>/workflows", views.source_workflows, name="source_workflows"),
    path("sources/<str:name>/workflows/<path:file>/dry-run", views.source_dry_run, name="source_dry_run"),
    path("sources/<str:name>/workflows/<path:file>/run", views.source_run, name="source_run"),
]
