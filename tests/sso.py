"""Configure the portal's single sign-on in a test the way settings.py does from the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripthut_site.sso import env as sso_env

if TYPE_CHECKING:
    from pytest_django.fixtures import Settings


def configure(settings: Settings, env: dict[str, str]) -> None:
    """Apply the settings that ``env`` (SCRIPTHUT_LDAP_*, SCRIPTHUT_OIDC_*) makes, for this test only."""
    for name, value in sso_env.auth_settings(env).items():
        setattr(settings, name, value)
