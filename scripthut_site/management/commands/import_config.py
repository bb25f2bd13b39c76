"""``manage.py import_config [FILE]``: load scripthut.yaml into the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scripthut_site.config import ConfigError, import_config


class Command(BaseCommand):
    help = (
        "Import a scripthut.yaml config file: backends, sources, environments, workflows and "
        "settings are created or updated by name. Nothing changes if the file has errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "file",
            nargs="?",
            default=str(settings.SCRIPTHUT_CONFIG),
            help="Config file (default: $SCRIPTHUT_CONFIG or ./scripthut.yaml).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])  # a Path, so that it is never read as YAML text
        try:
            import_config(path, stdout=self.stdout)
        except ConfigError as exc:
            raise CommandError(f"{path}: invalid config, nothing imported:\n{exc}") from None
