"""API tokens are stored hashed: the row is found by the key's SHA-256, and it keeps no more of
the key than 4 characters to tell tokens apart in the admin (runs.models.ApiToken)."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from runs.models import ApiToken

BEFORE = [("runs", "0007_audit_login_locked_out")]


def test_a_token_row_keeps_no_usable_part_of_the_key(user: User) -> None:
    key = ApiToken.issue(user)
    row = ApiToken.objects.values().get()
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == key[:4]
    clear = " ".join(str(value) for name, value in row.items() if name != "key_hash")
    assert not any(key[i : i + 5] in clear for i in range(len(key) - 4))  # 4 characters at most
    assert Client(headers={"Authorization": f"Token {key}"}).get("/api/runs").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_migration_shortens_the_prefixes_of_existing_tokens() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    owner = old.get_model("auth", "User").objects.create(username="early")
    old.get_model("runs", "ApiToken").objects.create(user=owner, key_hash="0" * 64, prefix="abcdefgh")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert ApiToken.objects.get().prefix == "abcd"
