"""Django set-up shared by the benchmarks: a throwaway SQLite data dir unless told otherwise."""

import os
import sys
import tempfile
from pathlib import Path


def setup() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("SCRIPTHUT_DATA_DIR", tempfile.mkdtemp(prefix="scripthut-bench-"))
    os.environ.setdefault("SCRIPTHUT_CONFIG", "/nonexistent/scripthut.yaml")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")
    os.environ.setdefault("SCRIPTHUT_LOG_LEVEL", "WARNING")
    import django

    django.setup()
