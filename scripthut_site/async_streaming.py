"""Streaming responses under ASGI: handed to the server through an asynchronous iterator.

WhiteNoise answers a static file (the pages' CSS and scripts, several per page view)
with a FileResponse over a synchronous iterator. Under ASGI, Django then warns
("StreamingHttpResponse must consume synchronous iterators in order to serve them
asynchronously") and reads the whole body in one go first. The portal's ASGI handler
gives such a response an asynchronous iterator that reads one chunk at a time in a
worker thread. (A middleware cannot do it: below sync-only middleware Django runs it
synchronously.) WSGI is left as it is: a synchronous iterator is what it wants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import cast

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse


class AsyncStreamingASGIHandler(ASGIHandler):
    """Django's ASGI handler, streaming every response asynchronously."""

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response = await super().get_response_async(request)
        if isinstance(response, StreamingHttpResponse) and not response.is_async:
            response.streaming_content = read_in_thread(cast(Iterator[bytes], response.streaming_content))
        return response


def asgi_application() -> AsyncStreamingASGIHandler:
    """What ``django.core.asgi.get_asgi_application`` does, with the handler above."""
    django.setup(set_prefix=False)
    return AsyncStreamingASGIHandler()


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def read_in_thread(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` one at a time, each read in a worker thread (a file read blocks)."""
    iterator = iter(chunks)
    read = sync_to_async(_next_chunk, thread_sensitive=False)
    while (chunk := await read(iterator)) is not None:
        yield chunk
