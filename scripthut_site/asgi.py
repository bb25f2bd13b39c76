"""ASGI entry point: Django over HTTP, routed through Channels."""

import os

from scripthut_site.async_streaming import asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")
django_asgi_app = asgi_application()  # Django's, streaming static files asynchronously

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)

application = ProtocolTypeRouter({"http": django_asgi_app})
