"""Django settings for ScriptHut, all from the environment.

- ``DATABASE_URL``: unset means an SQLite file in the data dir.
- ``REDIS_URL``: unset means embedded mode (in-process ticker, in-memory channel layer).
- ``SCRIPTHUT_CONFIG``, ``SCRIPTHUT_DATA_DIR``, ``SECRET_KEY``: see README.
- ``SCRIPTHUT_LDAP_*``, ``SCRIPTHUT_OIDC_*``: single sign-on, see README and scripthut_site.sso.
- ``SCRIPTHUT_PUBLIC_URL``, ``ALLOWED_HOSTS``, ``SCRIPTHUT_LOGIN_*``: README "Deployment hardening"
  and scripthut_site.deployment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONCE, NONE, SELF

from scripthut_site import deployment, notify_settings, paths
from scripthut_site.sso import env as sso_env

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = paths.data_dir()
SCRIPTHUT_CONFIG = paths.config_path()

SECRET_KEY = os.environ.get("SECRET_KEY") or paths.secret_key(DATA_DIR)
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
# `scripthut serve` adds its --host (scripthut_site.deployment.allow_host).
ALLOWED_HOSTS = deployment.allowed_hosts(os.environ, paths.config_setting("server_host"))
CSRF_TRUSTED_ORIGINS = deployment.csrf_trusted_origins(os.environ)
globals().update(deployment.tls_settings(os.environ))  # behind a TLS proxy: secure cookies, HSTS
# Whose X-Forwarded-For the server believes (scripthut serve's uvicorn); empty: nobody's.
SCRIPTHUT_TRUSTED_PROXIES = deployment.trusted_proxies(os.environ)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "channels",
    "axes",
    "csp",
    "ninja",  # the API docs' assets from the portal, not a CDN
    "backends",
    "sources",
    "runs",
    "scripthut_site",
]

MIDDLEWARE = [
    "scripthut_site.input_guard.InputGuardMiddleware",  # 413 for a body over the limit, 400 for NUL in the URL
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "runs.audit.trail.AuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a refused login into scripthut_site.lockout's answer
]

ROOT_URLCONF = "scripthut_site.urls"
CSRF_FAILURE_VIEW = "runs.audit.trail.csrf_failure"  # Django's 403 page, recorded in the audit trail
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
            # The template tags live with the pages (runs/web/), not at the app's top level.
            "libraries": {name: f"runs.web.templatetags.{name}" for name in ("scripthut", "costing", "notify")},
        },
    },
]

WSGI_APPLICATION = "scripthut_site.wsgi.application"
ASGI_APPLICATION = "scripthut_site.asgi.application"

_sqlite_url = f"sqlite:///{DATA_DIR / 'scripthut.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL") or _sqlite_url, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] != ":memory:":
        paths.private_database(Path(DATABASES["default"]["NAME"]))  # mode 600, and so its -wal and -shm
    # The embedded ticker thread and the web server write at the same time: WAL lets
    # readers go on while one writer works, IMMEDIATE takes the write lock up front so a
    # transaction never fails half-way on an upgrade, and the timeout waits for the lock.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-scripthut.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATA_UPLOAD_MAX_MEMORY_SIZE = int(float(os.environ.get("SCRIPTHUT_MAX_BODY_MB", "64")) * 1024**2)  # 100k tasks: ~20 MB

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

# Single sign-on: local accounts always; LDAP and OpenID Connect when their variables are set.
_sso = sso_env.auth_settings(os.environ)
AUTHENTICATION_BACKENDS: list[str] = _sso.pop("AUTHENTICATION_BACKENDS")
SCRIPTHUT_OIDC: sso_env.OIDCConfig | None = _sso.pop("SCRIPTHUT_OIDC")
globals().update(_sso)  # django-auth-ldap's AUTH_LDAP_* settings, if any

# Login throttling (django-axes, scripthut_site.lockout): per username and per address.
globals().update(deployment.throttle_settings(os.environ))

# Content-Security-Policy (django-csp): everything from the portal itself; no inline script
# unless it carries the request's nonce ({{ CSP_NONCE }}); no inline style, element or attribute
# (scripthut.js sets bar widths from data attributes). data: images are CSS icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
paths.private_dir(STATIC_ROOT)  # WhiteNoise warns about a missing root even when serving from finders
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the app folders too, so `scripthut serve` works before collectstatic.
WHITENOISE_USE_FINDERS = True

REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED = not REDIS_URL

CHANNEL_LAYERS: dict[str, dict[str, Any]]
if EMBEDDED:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}

# Celery (deployment mode): `scripthut beat` queues a tick per due backend, `scripthut
# worker` runs them (runs/workers/celery_tasks.py). Ticks are idempotent and beat queues every
# backend again at its next poll time, so nothing depends on the broker redelivering.
SCRIPTHUT_DISPATCH_SECONDS = float(os.environ.get("SCRIPTHUT_DISPATCH_SECONDS", "1"))
# The longest a tick may take (an SSH submit batch may take 300 s): then its worker is killed.
SCRIPTHUT_TICK_TIME_LIMIT = int(os.environ.get("SCRIPTHUT_TICK_TIME_LIMIT", "900"))
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Above the longest tick, so that Redis does not hand a running tick to a second worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": SCRIPTHUT_TICK_TIME_LIMIT + 300}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a message is gone only once its tick ran ...
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # ... and a killed pool process's tick is queued again
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a worker busy with a slow backend holds no other backend's tick
CELERY_TASK_TIME_LIMIT = SCRIPTHUT_TICK_TIME_LIMIT
# Beat saves its schedule file after every message it sends: the file's age is its health check.
CELERY_BEAT_SYNC_EVERY = 1
CELERY_BEAT_SCHEDULE = {
    "scripthut-dispatch": {
        "task": "runs.workers.celery_tasks.dispatch_ticks",
        "schedule": SCRIPTHUT_DISPATCH_SECONDS,
        # A dispatch nobody ran in time is replaced by the next one.
        "options": {"expires": max(5.0, 5 * SCRIPTHUT_DISPATCH_SECONDS)},
    },
    "scripthut-cleanup": {"task": "runs.workers.celery_tasks.cleanup", "schedule": 24 * 3600.0},
    # Runs on a schedule (runs.schedules): due times are looked for as often as ticks are dispatched.
    "scripthut-schedules": {
        "task": "runs.schedules.celery_tasks.fire_schedules",
        "schedule": SCRIPTHUT_DISPATCH_SECONDS,
        "options": {"expires": max(5.0, 5 * SCRIPTHUT_DISPATCH_SECONDS)},
    },
}
# Notifications (runs.notify): SMTP, retries, webhook address policy; beat sends what is due.
globals().update(notify_settings.notify_settings(os.environ))
SCRIPTHUT_NOTIFY = notify_settings.NotifyConfig.from_env(os.environ)
CELERY_IMPORTS = ["runs.notify.celery_tasks", "runs.schedules.celery_tasks"]
CELERY_BEAT_SCHEDULE |= notify_settings.beat_entry(os.environ)

# Engine knobs.
SCRIPTHUT_TICK_SECONDS = float(os.environ.get("SCRIPTHUT_TICK_SECONDS", "1"))
SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS = int(os.environ.get("SCRIPTHUT_UNKNOWN_JOB_GRACE_SECONDS", "300"))
# SQLite only (PostgreSQL uses an advisory lock): renewed every third of it while a tick runs.
SCRIPTHUT_BACKEND_LEASE_SECONDS = int(os.environ.get("SCRIPTHUT_BACKEND_LEASE_SECONDS", "15"))
# The AWS backends talk to this endpoint when set (an emulator, LocalStack); else to AWS.
# The root helper that runs local tasks as other accounts (backends.local.runas).
SCRIPTHUT_RUNAS_HELPER = os.environ.get("SCRIPTHUT_RUNAS_HELPER", "")
SCRIPTHUT_AWS_ENDPOINT_URL = os.environ.get("SCRIPTHUT_AWS_ENDPOINT_URL") or None
# Where EC2 prices come from when the config's pricing block names no source (runs.costing.prices).
SCRIPTHUT_PRICING_URL = os.environ.get("SCRIPTHUT_PRICING_URL", "https://instances.vantage.sh/instances.json")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "scripthut": {"handlers": ["console"], "level": os.environ.get("SCRIPTHUT_LOG_LEVEL", "INFO")},
        "runs": {"handlers": ["console"], "level": os.environ.get("SCRIPTHUT_LOG_LEVEL", "INFO")},
        "backends": {"handlers": ["console"], "level": os.environ.get("SCRIPTHUT_LOG_LEVEL", "INFO")},
        "scripthut_site": {"handlers": ["console"], "level": os.environ.get("SCRIPTHUT_LOG_LEVEL", "INFO")},
        "django_auth_ldap": {"handlers": ["console"], "level": "WARNING"},  # e.g. "LDAP server unreachable"
        "axes": {"handlers": ["console"], "level": "WARNING"},  # failed logins and lockouts, with the address
        "django.request": {"handlers": ["console"], "level": "ERROR"},  # a page's 500, with its traceback
    },
}
