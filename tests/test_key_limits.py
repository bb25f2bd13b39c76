"""Issue 18, finding 3: a pasted SSH key cannot make the portal burn CPU.

An OpenSSH key's header says how many bcrypt rounds stretch its passphrase (about 12 ms
each here; 2,000 rounds held a request for 23 s, twice). Such keys are refused from their
header, before any key derivation runs, with the reason; what is accepted is loaded in a
child process with a CPU-time limit (``backends.ssh.key_check``).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.contrib.auth.models import User
from django.test import Client

from backends import registry
from backends.config import validate_backend_settings
from backends.models import Backend, ClusterIdentity
from backends.ssh import key_check, keys
from backends.ssh.key_check import checked_fingerprint
from backends.ssh.keys import KeyProblem, load_key
from tests.test_identities import key_lines, new_key

pytestmark = pytest.mark.django_db
PASSPHRASE = "pass phrase"


def with_rounds(private_key: str, rounds: int) -> str:
    """The key with its header's bcrypt rounds set to ``rounds`` (the rest unchanged: a key
    whose author asked ssh-keygen for ``-a ROUNDS``, without waiting for ssh-keygen to stretch it)."""
    lines = private_key.strip().splitlines()
    data = bytearray(base64.b64decode("".join(lines[1:-1])))
    at = len(keys.OPENSSH_MAGIC)
    for _ in range(2):  # ciphername, kdfname
        at += 4 + struct.unpack_from(">I", data, at)[0]
    at += 4  # kdfoptions' length; then the salt
    at += 4 + struct.unpack_from(">I", data, at)[0]
    struct.pack_into(">I", data, at, rounds)
    body = base64.b64encode(bytes(data)).decode()
    return "\n".join([lines[0], *(body[i : i + 70] for i in range(0, len(body), 70)), lines[-1]]) + "\n"


@pytest.fixture
def hpc(db: None) -> Iterator[Backend]:
    ssh = {"host": "127.0.0.1", "port": 9, "identity": "per_user"}
    backend = Backend.objects.create(
        name="hpc", kind="slurm", settings=validate_backend_settings("slurm", {"ssh": ssh}), max_concurrent=3
    )
    yield backend
    registry.close_all()


@pytest.fixture
def alice_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_key_with_2000_rounds_is_refused_by_its_header_before_any_kdf() -> None:
    private, _ = new_key(PASSPHRASE)  # cryptography writes 16 rounds, like ssh-keygen
    assert keys.openssh_kdf("".join(private.strip().splitlines()[1:-1])) == ("bcrypt", 16)
    costly = with_rounds(private, 2000)
    with pytest.raises(KeyProblem) as caught:
        load_key(costly, PASSPHRASE)
    # The reason names the rounds: it comes from the header. A KDF run would have taken
    # 2,000 rounds (23 s) and then said "wrong passphrase", the rounds being changed.
    assert caught.value.field == "private_key"
    assert "2,000 bcrypt rounds; at most 64 are accepted" in str(caught.value)
    assert "ssh-keygen -p -a 16" in str(caught.value)
    with pytest.raises(KeyProblem, match="2,000 bcrypt rounds"):
        checked_fingerprint(costly, PASSPHRASE)


def test_the_identities_page_refuses_it_with_the_reason_and_takes_a_16_round_key(
    alice_client: Client, user: User, hpc: Backend
) -> None:
    private, _ = new_key(PASSPHRASE)
    form = {"username": "hut", "private_key": with_rounds(private, 2000), "passphrase": PASSPHRASE}
    answer = alice_client.post("/settings/identities/hpc", form)
    html = answer.content.decode()
    assert answer.status_code == 400 and "Private key: this key&#x27;s passphrase is stretched with 2,000" in html
    assert not any(line in html for line in key_lines(private)) and not ClusterIdentity.objects.exists()

    form["private_key"] = private  # the same key as ssh-keygen wrote it: 16 rounds
    assert alice_client.post("/settings/identities/hpc", form).status_code == 302
    identity = ClusterIdentity.objects.get(user=user)
    assert identity.fingerprint == load_key(private, PASSPHRASE).fingerprint


def test_keys_whose_cost_their_author_chooses_are_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    ).decode()
    with pytest.raises(KeyProblem, match="PKCS#8-encrypted keys"):
        load_key(pkcs8, PASSPHRASE)
    private, _ = new_key()
    padded = private.replace("-----END", "A" * 17_000 + "\n-----END")
    with pytest.raises(KeyProblem, match="at most 16,384 are accepted"):
        checked_fingerprint(padded)
    garbage = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(KeyProblem, match="OpenSSH header cannot be read"):
        load_key(garbage)


def test_loading_a_key_runs_under_a_cpu_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the header check widened, a 5,000-round key (a minute of CPU) reaches the child,
    # which the kernel stops after its second of CPU time.
    monkeypatch.setattr(keys, "MAX_KDF_ROUNDS", 100_000)
    monkeypatch.setattr(key_check, "KEY_CPU_SECONDS", 1)
    private, _ = new_key(PASSPHRASE)
    with pytest.raises(KeyProblem, match="took more than 1 s of CPU time"):
        checked_fingerprint(with_rounds(private, 5000), PASSPHRASE)
    # Within the limits the child answers the fingerprint, and the key's problems with their field.
    monkeypatch.setattr(key_check, "KEY_CPU_SECONDS", 5)
    assert checked_fingerprint(private, PASSPHRASE) == load_key(private, PASSPHRASE).fingerprint
    with pytest.raises(KeyProblem) as caught:
        checked_fingerprint(private, "wrong")
    assert (caught.value.field, str(caught.value)) == ("passphrase", "wrong passphrase for this key")
