"""Secrets at rest: Fernet with a list of keys outside the database, and rotation."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from backends.models import Backend, ClusterIdentity
from scripthut_site import crypto


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("SCRIPTHUT_SECRET_KEYS", raising=False)
    with override_settings(DATA_DIR=tmp_path):
        yield tmp_path
    crypto.forget_keys()


def test_key_file_is_made_once_private_and_outside_the_database(data_dir: Path) -> None:
    token = crypto.encrypt("hunter2")
    assert token != "hunter2" and "hunter2" not in token
    key_file = data_dir / crypto.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    crypto.forget_keys()
    assert crypto.decrypt(token) == "hunter2"  # the same key, read back from the file


def test_keys_from_the_environment_newest_first(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("SCRIPTHUT_SECRET_KEYS", old)
    crypto.forget_keys()
    token = crypto.encrypt("s3cret")
    monkeypatch.setenv("SCRIPTHUT_SECRET_KEYS", f"{new},{old}")
    crypto.forget_keys()
    assert crypto.decrypt(token) == "s3cret"  # an older key still decrypts
    rotated = crypto.rotate(token)
    monkeypatch.setenv("SCRIPTHUT_SECRET_KEYS", new)
    crypto.forget_keys()
    assert crypto.decrypt(rotated) == "s3cret"  # the newest key alone reads the rotated value
    with pytest.raises(crypto.SecretKeyError) as caught:
        crypto.decrypt(token)
    assert old not in str(caught.value) and new not in str(caught.value)
    assert not (data_dir / crypto.KEY_FILE).exists()  # env keys: no file is written


def test_bad_keys_are_named_but_not_echoed(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTHUT_SECRET_KEYS", "not-a-fernet-key")
    crypto.forget_keys()
    with pytest.raises(crypto.SecretKeyError, match="SCRIPTHUT_SECRET_KEYS") as caught:
        crypto.encrypt("x")
    assert "not-a-fernet-key" not in str(caught.value)


@pytest.mark.django_db
def test_rotate_keys_new_key_keeps_every_secret_readable(data_dir: Path) -> None:
    crypto.encrypt("warm up")  # the first key file
    call_command("rotate_keys", "--new-key")
    keys = (data_dir / crypto.KEY_FILE).read_text().split()
    assert len(keys) == 2


@pytest.mark.django_db
def test_rotate_keys_refuses_new_key_with_env_keys(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTHUT_SECRET_KEYS", Fernet.generate_key().decode())
    with pytest.raises(CommandError, match="SCRIPTHUT_SECRET_KEYS"):
        call_command("rotate_keys", "--new-key")


@pytest.mark.django_db
def test_rotation_keeps_cluster_identities_readable_after_the_old_key_is_dropped(data_dir: Path, user: User) -> None:
    backend = Backend.objects.create(name="hpc", kind="slurm", settings={"ssh": {"identity": "per_user"}})
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    ClusterIdentity.objects.create(
        user=user, backend=backend, username="hut", private_key=key, passphrase="pp", fingerprint="SHA256:x"
    )
    (old,) = (data_dir / crypto.KEY_FILE).read_text().split()
    call_command("rotate_keys", "--new-key")
    new, kept = (data_dir / crypto.KEY_FILE).read_text().split()
    assert kept == old
    crypto.write_key_file([new.encode()])  # the old key is gone
    identity = ClusterIdentity.objects.get()
    assert (identity.private_key, identity.passphrase) == (key, "pp")
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key FROM backends_clusteridentity")
        (stored,) = cursor.fetchone()
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in stored
    crypto.write_key_file([old.encode()])  # really re-encrypted: the old key alone no longer reads it
    with pytest.raises(crypto.SecretKeyError):
        ClusterIdentity.objects.get()
