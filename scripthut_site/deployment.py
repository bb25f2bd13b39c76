"""Deployment settings from the environment (README "Deployment hardening").

Pure functions of an environment mapping (like scripthut_site.sso.env), so that settings.py
and the tests build the same settings.

- ``SCRIPTHUT_LOGIN_FAILURE_LIMIT``, ``SCRIPTHUT_LOGIN_COOLOFF_MINUTES``: login throttling.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

LOGIN_FAILURE_LIMIT = 5
LOGIN_COOLOFF_MINUTES = 15.0


def throttle_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """django-axes: N failures per username and per address in the cool-off time lock them for that time."""
    return {
        "AXES_FAILURE_LIMIT": int(env.get("SCRIPTHUT_LOGIN_FAILURE_LIMIT") or LOGIN_FAILURE_LIMIT),
        "AXES_COOLOFF_TIME": timedelta(
            minutes=float(env.get("SCRIPTHUT_LOGIN_COOLOFF_MINUTES") or LOGIN_COOLOFF_MINUTES)
        ),
        "AXES_LOCKOUT_PARAMETERS": "scripthut_site.lockout.lockout_parameters",
        "AXES_LOCKOUT_CALLABLE": "scripthut_site.lockout.lockout_response",
        # Refused attempts during a lockout do not extend it: the Retry-After given stays true.
        "AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT": False,
        # The log names the username and address (as the audit trail does); passwords are always masked.
        "AXES_SENSITIVE_PARAMETERS": ["csrfmiddlewaretoken"],
    }
