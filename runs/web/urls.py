"""Portal pages; paths follow the original ScriptHut's endpoints."""

from django.urls import path

from runs.costing import views as costing
from runs.live import stream
from runs.web import schedules, tokens, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("jobs", views.jobs, name="jobs"),
    path("jobs/stream", stream.jobs_stream, name="jobs_stream"),
    path("filter/toggle", views.filter_toggle, name="filter_toggle"),
    path("runs", views.run_list, name="run_list"),
    path("runs/<str:run_id>", views.run_detail, name="run_detail"),
    path("runs/<str:run_id>/items", views.run_items, name="run_items"),
    path("runs/<str:run_id>/group", views.run_group, name="run_group"),
    path("runs/<str:run_id>/timeline", views.run_timeline, name="run_timeline"),
    path("runs/<str:run_id>/cancel", views.run_cancel, name="run_cancel"),
    path("runs/<str:run_id>/relaunch", views.run_relaunch, name="run_relaunch"),
    # Task ids are free text (dots, even slashes): <path:> matches them, and the fixed
    # suffix after it tells the two task pages apart.
    path("runs/<str:run_id>/tasks/<path:task_id>/script", views.task_script, name="task_script"),
    path("runs/<str:run_id>/tasks/<path:task_id>/logs/<str:stream>", views.task_logs, name="task_logs"),
    path("workflows", views.workflow_list, name="workflow_list"),
    path("schedules", schedules.schedule_list, name="schedule_list"),
    path("schedules/<str:name>/toggle", schedules.schedule_toggle, name="schedule_toggle"),
    path("schedules/<str:name>/delete", schedules.schedule_delete, name="schedule_delete"),
    path("audit", views.audit_trail, name="audit_trail"),
    path("usage", costing.usage, name="usage"),
    path("usage.csv", costing.usage_download, name="usage_csv"),
    path("settings/tokens", tokens.token_settings, name="token_settings"),
    path("settings/tokens/<int:pk>/revoke", tokens.revoke_token, name="revoke_token"),
    path("settings/tokens/max-days", tokens.token_max_days, name="token_max_days"),
    path("workflows/<path:name>/dry-run", views.workflow_dry_run, name="workflow_dry_run"),
    path("workflows/<path:name>/run", views.workflow_run, name="workflow_run"),
]
