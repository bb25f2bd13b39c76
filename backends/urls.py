"""Settings pages of the backends app."""

from django.urls import path

from backends import views

urlpatterns = [
    path("settings/identities", views.identities, name="identities"),
    path("settings/identities/<str:backend>", views.identity_save, name="identity_save"),
    path("settings/identities/<str:backend>/delete", views.identity_delete, name="identity_delete"),
]
