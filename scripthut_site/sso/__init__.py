"""Single sign-on, each part optional and off unless its variables are set (README "Single sign-on").

- env.py: SCRIPTHUT_LDAP_* and SCRIPTHUT_OIDC_* into settings (django-auth-ldap's AUTH_LDAP_*,
  the OpenID Connect provider, the authentication backends).
- oidc.py: the OpenID Connect client (Authlib), its claims, and the backend that makes users
  and groups from them.
- views.py, urls.py: the login page with its SSO button, and the OpenID Connect round trip.
"""
