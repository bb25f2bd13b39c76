from django.urls import path

from runs.notify import views

urlpatterns = [
    path("settings/notifications", views.notification_settings, name="notification_settings"),
    path("settings/notifications/confirm", views.send_confirmation, name="send_confirmation"),
    path("settings/notifications/confirm/<str:token>", views.confirm_email, name="confirm_email"),
    path("settings/notifications/addresses/<int:pk>/forget", views.forget_email, name="forget_email"),
    path("notifications/failed", views.failed_notifications, name="failed_notifications"),
    path("notifications/<int:pk>/retry", views.retry_notification, name="retry_notification"),
]
