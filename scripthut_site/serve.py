"""``scripthut serve``: listen first, then migrate, import the config (or set up the demo)
and make the first admin, then serve, with the embedded ticker in a child process
(:mod:`runs.workers.ticker_process`).

The port is bound before anything else so that a start that cannot serve changes nothing:
no migration, no import, no admin whose password would be printed by a start that fails.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

WEB_NICENESS = 5  # embedded mode: the web server's, above its ticker's (0)
STOP_SECONDS = 5  # a stop waits this long for requests under way, then closes what is still open


def serve(*, host: str | None, port: int | None, strict: bool) -> int:
    from django.conf import settings

    from scripthut_site import deployment

    host, port = _address(host, port)
    try:
        # Bound first: a start that cannot serve changes nothing (no migration, no import,
        # no admin whose password would be printed by a start that then fails).
        sock = _listen(host, port)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with sock:
        deployment.allow_host(host)
        if (prepared := _prepare(strict=strict)) != 0:
            return prepared
        print(f"ScriptHut is at http://{host}:{port}/  (data: {settings.DATA_DIR})", flush=True)
        return _serve_on(sock, host, port)


def _address(host: str | None, port: int | None) -> tuple[str, int]:
    """Where to listen: the command line, else the config file's settings, else what the
    database holds (a portal configured before), else 127.0.0.1:8000. Nothing is migrated."""
    from scripthut_site.paths import config_setting

    host = host or config_setting("server_host")
    where = port or config_setting("server_port")
    if not (host and where):
        stored = _stored_address()
        host, where = host or stored[0], where or stored[1]
    return host, int(where)


def _stored_address() -> tuple[str, int]:
    from django.db import DatabaseError, connection

    from runs.models import PortalSettings

    if connection.vendor == "sqlite" and not _has_data(Path(connection.settings_dict["NAME"])):
        return "127.0.0.1", 8000  # a first start: reading it would write a journal in it
    try:
        row = PortalSettings.objects.filter(pk=1).values_list("server_host", "server_port").first()
    except DatabaseError:  # a database not migrated yet
        row = None
    return row or ("127.0.0.1", 8000)


def _has_data(database: Path) -> bool:
    return database.is_file() and database.stat().st_size > 0  # settings make it empty, mode 600


def _prepare(*, strict: bool) -> int:
    """Migrate, import the config (or set up the demo) and make the first admin."""
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    config = Path(settings.SCRIPTHUT_CONFIG)
    if config.is_file():
        from scripthut_site.config import import_file

        if import_file(config, strict=strict) != 0:
            return 1
    else:
        from runs.demo import ensure_demo_setup

        ensure_demo_setup()
        print(f"No config file at {config.resolve()}: using the built-in 'local' backend and the 'demo' workflow.")
    _ensure_admin()
    return 0


def _serve_on(sock: socket.socket, host: str, port: int) -> int:
    import uvicorn
    from django.conf import settings

    ticker = None
    if settings.EMBEDDED:
        # The ticker in a process of its own: a busy web server must not slow the runs.
        from runs.workers.ticker_process import TickerProcess

        ticker = TickerProcess()
        # Then the server yields the CPU to the ticker and the jobs it starts: with 16 readers
        # on two cores, the runs kept their pace at niceness 5 and slowed by a third at 0
        # (bench/local_load_bench.py), while the readers' requests per second barely moved.
        os.nice(WEB_NICENESS)
    app = "scripthut_site.asgi:application"
    from scripthut_site import deployment

    options = deployment.server_proxy_options()  # X-Forwarded-For only from SCRIPTHUT_TRUSTED_PROXIES
    # Open event streams and sockets would hold a stop for minutes (they end every RECHECK_SECONDS).
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=STOP_SECONDS,
        **options,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl+C: a normal stop, as with uvicorn.run
        pass
    finally:
        if ticker:
            ticker.stop()
    return 0 if server.started else 1


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port as uvicorn would bind it (which then serves on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart over TIME_WAIT
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _ensure_admin() -> None:
    from django.contrib.auth.models import User

    if User.objects.exists():
        return
    password = os.environ.get("SCRIPTHUT_ADMIN_PASSWORD")
    generated = not password
    password = password or secrets.token_urlsafe(12)
    User.objects.create_superuser("admin", email="", password=password)
    if generated:
        print(f"Created user 'admin' with password: {password}  (shown once; change it in the admin)")
    else:
        print("Created user 'admin' with the password from SCRIPTHUT_ADMIN_PASSWORD.")
