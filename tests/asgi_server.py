"""The portal's ASGI application under a real uvicorn, in a thread of the test process, on a
free loopback port: websockets and Server-Sent Events need an ASGI server (pytest-django's
``live_server`` is WSGI). The embedded ticker and the in-memory channel layer share the
process with it, as in ``scripthut serve``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth.models import User
from django.db import connection
from django.test import Client


@contextmanager
def asgi_server() -> Iterator[str]:
    """Serve ``scripthut_site.asgi.application``; yields its base URL; stops it afterwards."""
    import uvicorn

    from scripthut_site.asgi import application
    from scripthut_site.deployment import server_proxy_options

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        application, log_level="warning", lifespan="off", ws="websockets-sansio", **server_proxy_options()
    )  # forwarded headers as `scripthut serve` takes them
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    # Its threads close their connections after each use: PostgreSQL's settings keep them for
    # 60 s, and one kept by the thread that runs the websockets' database calls (asgiref's
    # one thread for the whole process) would still hold the test database when it is dropped.
    keep = connection.settings_dict["CONN_MAX_AGE"]
    connection.settings_dict["CONN_MAX_AGE"] = 0
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        connection.settings_dict["CONN_MAX_AGE"] = keep


def session_cookie(user: User) -> str:
    """A ``Cookie`` header value of a logged-in session of ``user``."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"
