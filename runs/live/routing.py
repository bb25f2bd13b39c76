"""Websocket paths: each live page's path followed by ``live``."""

from django.urls import path

from runs.live.consumers import JobsConsumer, RunConsumer, RunListConsumer

websocket_urlpatterns = [
    path("live", JobsConsumer.as_asgi()),
    path("runs/live", RunListConsumer.as_asgi()),
    path("runs/<str:run_id>/live", RunConsumer.as_asgi()),
]
