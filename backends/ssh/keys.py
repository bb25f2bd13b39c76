"""SSH keys held in memory: a private key pasted as text (with its passphrase and an
optional OpenSSH certificate) becomes a paramiko key without ever touching the disk.

Used to check a key when a user registers it (:class:`KeyProblem` names the form field
at fault) and to log in with it.
"""

from __future__ import annotations

import base64
import binascii
import io
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

Loader = Callable[[bytes, bytes | None], Any]


class KeyProblem(ValueError):
    """The key, its passphrase or its certificate cannot be used; ``field`` says which.

    Messages never quote the key or the passphrase."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def load_key(private_key: str, passphrase: str = "", certificate: str = "") -> paramiko.PKey:
    """The private key (OpenSSH or PEM: RSA, ECDSA, Ed25519), with its certificate if given."""
    text = private_key.strip() + "\n"
    if text.startswith(PUBLIC_KEY_PREFIXES):
        raise KeyProblem("private_key", "this is a public key: paste the private key (id_ed25519, not the .pub file)")
    key_class = _key_class(text, passphrase)
    try:
        pkey = key_class.from_private_key(io.StringIO(text), password=passphrase or None)
    except (paramiko.SSHException, ValueError) as exc:
        raise KeyProblem("private_key", f"paramiko cannot load this key: {exc}") from None
    if certificate.strip():
        attach_certificate(pkey, certificate)
    return pkey


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
