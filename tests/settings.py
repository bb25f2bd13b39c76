"""Test settings: a private data dir and no config file, then the real settings."""

import os
import tempfile

os.environ.setdefault("SCRIPTHUT_DATA_DIR", tempfile.mkdtemp(prefix="scripthut-test-"))
os.environ.setdefault("SCRIPTHUT_CONFIG", os.path.join(os.environ["SCRIPTHUT_DATA_DIR"], "no-config.yaml"))

from scripthut_site.settings import *  # noqa: E402,F403

SCRIPTHUT_TICK_SECONDS = 0.2
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# Tests never fetch prices from the internet: a pricing block without a source goes to a closed port.
SCRIPTHUT_PRICING_URL = "http://127.0.0.1:9/instances.json"

# The notification tests' receivers listen on loopback.
from dataclasses import replace as _replace  # noqa: E402

# Their addresses are at example.org, which the test portal allows as SCRIPTHUT_NOTIFY_EMAIL_DOMAINS
# would (tests/test_notify_trust.py uses other domains, and sets the allowance itself).
SCRIPTHUT_NOTIFY = _replace(SCRIPTHUT_NOTIFY, allow_private_webhooks=True, email_domains=("example.org",))  # noqa: F405
