"""The form a user registers their cluster identity with.

The private key and its passphrase are write-only: they are checked (paramiko must be
able to load the key, in a child process with a CPU-time limit: ``backends.ssh.key_check``)
and stored encrypted, and no page ever renders them back, not even
a form redisplayed with errors.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.core.validators import RegexValidator

from backends.models import Backend, ClusterIdentity
from backends.ssh.key_check import checked_fingerprint
from backends.ssh.keys import KeyProblem


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders its value: what is typed in goes one way only."""

    def format_value(self, value: Any) -> None:
        return None


class IdentityForm(forms.Form):
    username = forms.CharField(
        max_length=64,
        validators=[RegexValidator(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$", "letters, digits, and . _ @ - only")],
        help_text="Your login on the cluster.",
    )
    private_key = forms.CharField(
        required=False,
        strip=False,
        widget=WriteOnlyTextarea(attrs={"rows": 6, "autocomplete": "off", "spellcheck": "false"}),
        help_text="The private key file (e.g. ~/.ssh/id_ed25519), pasted whole. Never shown again.",
    )
    passphrase = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Only if the key has one.",
    )
    certificate = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text="The OpenSSH certificate (id_ed25519-cert.pub), if your cluster signs keys.",
    )

    def __init__(self, *args: Any, existing: ClusterIdentity | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.existing = existing
        self.fingerprint = ""
        if existing is not None:
            self.fields["username"].initial = existing.username
            self.fields["private_key"].help_text = "Leave empty to keep the current key; paste one to replace it."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if data.get("private_key", "").strip():
                key, passphrase, certificate = (
                    data["private_key"],
                    data.get("passphrase", ""),
                    data.get("certificate", ""),
                )
                self.fingerprint = checked_fingerprint(key, passphrase, certificate)
            elif self.existing is None:
                self.add_error("private_key", "paste the private key the cluster knows you by")
            elif data.get("certificate"):
                # A new certificate for the key already stored (certificates expire).
                kept = self.existing
                checked_fingerprint(kept.private_key, kept.passphrase, data["certificate"])
        except KeyProblem as problem:
            self.add_error(problem.field, str(problem))
        return data

    def save(self, user: User, backend: Backend) -> ClusterIdentity:
        identity = self.existing or ClusterIdentity(user=user, backend=backend)
        identity.username = self.cleaned_data["username"]
        if self.fingerprint:  # a new key: its passphrase and certificate come with it
            identity.private_key = self.cleaned_data["private_key"].strip() + "\n"
            identity.passphrase = self.cleaned_data["passphrase"]
            identity.certificate = self.cleaned_data["certificate"].strip()
            identity.fingerprint = self.fingerprint
        elif self.cleaned_data["certificate"]:
            identity.certificate = self.cleaned_data["certificate"].strip()
        identity.save()
        return identity
