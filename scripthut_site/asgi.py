"""ASGI entry point: Django over HTTP, and the live pages' websockets, routed through Channels."""

import os

from scripthut_site.async_streaming import asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")
django_asgi_app = asgi_application()  # Django's, streaming static files asynchronously

# These need Django set up first.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from runs.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The session cookie says who the socket's user is; another site's page may not open one.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
