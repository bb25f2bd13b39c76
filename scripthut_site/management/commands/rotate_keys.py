"""``scripthut rotate-keys``: re-encrypt every stored secret with the newest key."""

from __future__ import annotations

import os
from typing import Any

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from scripthut_site import crypto


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first (newest) key; --new-key adds a key first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--new-key",
            action="store_true",
            help=f"generate a key and put it first in {crypto.KEY_FILE} (not with SCRIPTHUT_SECRET_KEYS)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["new_key"]:
            if os.environ.get("SCRIPTHUT_SECRET_KEYS"):
                raise CommandError(
                    "keys come from SCRIPTHUT_SECRET_KEYS: put a new key (Fernet.generate_key()) first in it, "
                    "then run rotate-keys again"
                )
            crypto.write_key_file([Fernet.generate_key(), *crypto.load_keys()])
        crypto.forget_keys()
        count = 0
        try:
            with transaction.atomic():
                for model, names in crypto.encrypted_fields():
                    for row in model._default_manager.all().only("pk", *names):
                        # Reading decrypts with any key; the UPDATE encrypts with the newest.
                        values = {name: getattr(row, name) for name in names}
                        model._default_manager.filter(pk=row.pk).update(**values)
                        count += sum(1 for value in values.values() if value)
        except crypto.SecretKeyError as exc:
            raise CommandError(f"{exc}; nothing was changed") from exc
        self.stdout.write(f"re-encrypted {count} secret{'s' if count != 1 else ''} with the newest key")
