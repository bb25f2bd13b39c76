"""``/accounts/``: the login page, logout, and the OpenID Connect round trip."""

from django.contrib.auth import views as auth_views
from django.urls import path

from scripthut_site.sso import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("oidc/login/", views.oidc_login, name="oidc_login"),
    path("oidc/callback/", views.oidc_callback, name="oidc_callback"),
]
