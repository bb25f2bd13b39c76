"""SSH keys held in memory: a private key pasted as text (with its passphrase and an
optional OpenSSH certificate) becomes a paramiko key without ever touching the disk.

Used to check a key when a user registers it (:class:`KeyProblem` names the form field
at fault) and to log in with it.

A pasted key costs what its author chooses: an OpenSSH key's passphrase is stretched with
as many bcrypt rounds as its header says (about 12 ms each here), and a PKCS#8-encrypted PEM
names its own PBKDF2 or scrypt cost. So before any key derivation runs, :func:`refuse_costly`
reads the header and refuses a key over ``MAX_KEY_CHARS``, an OpenSSH key with more than
``MAX_KDF_ROUNDS`` rounds and any PKCS#8-encrypted key. A key a user pastes is then loaded
in a child process with a CPU-time limit (:mod:`backends.ssh.key_check`).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
from collections.abc import Callable
from typing import Any

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

OPENSSH_HEADER = "-----BEGIN OPENSSH PRIVATE KEY-----"
PUBLIC_KEY_PREFIXES = ("ssh-", "ecdsa-sha2-", "sk-", "---- BEGIN SSH2 PUBLIC KEY", "-----BEGIN PUBLIC KEY")
KEY_CLASSES: tuple[tuple[type, type[paramiko.PKey]], ...] = (
    (rsa.RSAPrivateKey, paramiko.RSAKey),
    (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
    (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
)
UNSUPPORTED = "unsupported private key type (use RSA, ECDSA or Ed25519)"
MAX_KEY_CHARS = 16_384  # an OpenSSH RSA key of 16,384 bits is about 12,700
MAX_KDF_ROUNDS = 64  # ssh-keygen's default is 16
OPENSSH_BLOCK = re.compile(r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----", re.DOTALL)
OPENSSH_MAGIC = b"openssh-key-v1\x00"
REENCRYPT = "re-encrypt it with ssh-keygen -p -a 16 -f KEYFILE"

Loader = Callable[[bytes, bytes | None], Any]


class KeyProblem(ValueError):
    """The key, its passphrase or its certificate cannot be used; ``field`` says which.

    Messages never quote the key or the passphrase."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def load_key(
    private_key: str, passphrase: str = "", certificate: str = "", max_rounds: int | None = None
) -> paramiko.PKey:
    """The private key (OpenSSH or PEM: RSA, ECDSA, Ed25519), with its certificate if given.

    ``max_rounds``: the most bcrypt rounds accepted (default ``MAX_KDF_ROUNDS``)."""
    text = private_key.strip() + "\n"
    if text.startswith(PUBLIC_KEY_PREFIXES):
        raise KeyProblem("private_key", "this is a public key: paste the private key (id_ed25519, not the .pub file)")
    refuse_costly(text, max_rounds)
    key_class = _key_class(text, passphrase)
    try:
        pkey = key_class.from_private_key(io.StringIO(text), password=passphrase or None)
    except (paramiko.SSHException, ValueError) as exc:
        raise KeyProblem("private_key", f"paramiko cannot load this key: {exc}") from None
    if certificate.strip():
        attach_certificate(pkey, certificate)
    return pkey


def refuse_costly(text: str, max_rounds: int | None = None) -> None:
    """Refuse a key whose loading would cost more than a bounded amount of work; runs no KDF."""
    limit = MAX_KDF_ROUNDS if max_rounds is None else max_rounds
    if len(text) > MAX_KEY_CHARS:
        raise KeyProblem(
            "private_key", f"this key is {len(text):,} characters long; at most {MAX_KEY_CHARS:,} are accepted"
        )
    if "ENCRYPTED PRIVATE KEY-----" in text:
        raise KeyProblem(
            "private_key",
            "PKCS#8-encrypted keys (BEGIN ENCRYPTED PRIVATE KEY) are not accepted: convert it to "
            "OpenSSH's format with ssh-keygen -p -a 16 -f KEYFILE",
        )
    for block in OPENSSH_BLOCK.findall(text):
        kdf, rounds = openssh_kdf(block)
        if kdf not in ("none", "bcrypt"):
            raise KeyProblem("private_key", f"unsupported key derivation {kdf!r} (ssh-keygen writes bcrypt)")
        if rounds > limit:
            raise KeyProblem(
                "private_key",
                f"this key's passphrase is stretched with {rounds:,} bcrypt rounds; at most {limit} are "
                f"accepted (ssh-keygen's default is 16): {REENCRYPT}",
            )


def openssh_kdf(block: str) -> tuple[str, int]:
    """The KDF name and rounds of an openssh-key-v1 key (the base64 between its BEGIN and END
    lines), read from its unencrypted header: ``"openssh-key-v1\\0"``, then the strings
    ciphername, kdfname, kdfoptions (for bcrypt: the string salt and the uint32 rounds)."""
    try:
        data = base64.b64decode("".join(block.split()), validate=True)
        if not data.startswith(OPENSSH_MAGIC):
            raise ValueError("no openssh-key-v1 magic")
        _, at = _ssh_string(data, len(OPENSSH_MAGIC))  # ciphername
        kdf, at = _ssh_string(data, at)
        options, _ = _ssh_string(data, at)
        if kdf != b"bcrypt":
            return kdf.decode("ascii", "replace"), 0
        _, at = _ssh_string(options, 0)  # salt
        (rounds,) = struct.unpack_from(">I", options, at)
    except (binascii.Error, ValueError, struct.error):
        raise KeyProblem("private_key", "not a private key (its OpenSSH header cannot be read)") from None
    return "bcrypt", int(rounds)


def _ssh_string(data: bytes, at: int) -> tuple[bytes, int]:
    """The SSH wire-format string (uint32 length, bytes) at ``at``, and where the next field starts."""
    (length,) = struct.unpack_from(">I", data, at)
    end = at + 4 + length
    if end > len(data):
        raise ValueError("string runs past the end")
    return data[at + 4 : end], end


def _key_class(text: str, passphrase: str) -> type[paramiko.PKey]:
    """The paramiko class of the key; checks the passphrase on the way (as PKey.from_path does)."""
    data = text.encode()
    password = passphrase.encode() or None
    # OpenSSH's own format first, like ssh-keygen writes; PEM (BEGIN RSA/EC PRIVATE KEY) otherwise.
    loader: Loader = (
        serialization.load_ssh_private_key if OPENSSH_HEADER in text else serialization.load_pem_private_key
    )
    try:
        loaded = loader(data, password)
    except TypeError:
        # A passphrase missing, or one given for a key that has none.
        if password is None:
            raise KeyProblem("passphrase", "this key is encrypted: enter its passphrase") from None
        raise KeyProblem("passphrase", "this key has no passphrase: leave the field empty") from None
    except ValueError:
        if password is not None and _encrypted(loader, data):
            raise KeyProblem("passphrase", "wrong passphrase for this key") from None
        raise KeyProblem("private_key", "not a private key (expected an OpenSSH or PEM private key file)") from None
    except UnsupportedAlgorithm:
        raise KeyProblem("private_key", UNSUPPORTED) from None
    for crypto_class, key_class in KEY_CLASSES:
        if isinstance(loaded, crypto_class):
            return key_class
    raise KeyProblem("private_key", UNSUPPORTED)


def _encrypted(loader: Loader, data: bytes) -> bool:
    try:
        loader(data, None)
    except TypeError:
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False
    return False


def attach_certificate(pkey: paramiko.PKey, certificate: str) -> None:
    """Log in with ``pkey``'s OpenSSH certificate (the ``-cert.pub`` line).

    The text is decoded here and handed over as a message: paramiko would read a
    string that names an existing file as that file."""
    fields = certificate.split()
    try:
        blob = paramiko.Message(base64.b64decode(fields[1], validate=True))
    except (IndexError, binascii.Error):
        raise KeyProblem("certificate", "not an OpenSSH certificate (the one line of the -cert.pub file)") from None
    if not fields[0].endswith("-cert-v01@openssh.com"):
        raise KeyProblem("certificate", f"this is a {fields[0]} key, not an OpenSSH certificate (the -cert.pub file)")
    try:
        pkey.load_certificate(blob)
    except (ValueError, paramiko.SSHException) as exc:
        raise KeyProblem("certificate", f"this certificate does not go with the key: {exc}") from None
    if pkey.public_blob is None or pkey.public_blob.key_type != fields[0]:
        raise KeyProblem("certificate", "the certificate's type does not match its contents")
