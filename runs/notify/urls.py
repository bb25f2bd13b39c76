from django.urls import path

from runs.notify import views

urlpatterns = [
    path("settings/notifications", views.notification_settings, name="notification_settings"),
    path("notifications/failed", views.failed_notifications, name="failed_notifications"),
    path("notifications/<int:pk>/retry", views.retry_notification, name="retry_notification"),
]
