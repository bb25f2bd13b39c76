"""The API object of the REST API (django-ninja): token auth, and errors that are always
``{"error": "<message>"}``; validation problems are 400 (not ninja's 422) and name the field
path. Clients send ``Authorization: Token <key>``. The operations are in runs.api.routes
(runs), runs.api.tasks (one task, its script and logs), runs.api.documents (sources and
configured workflows) and runs.api.account (who the caller is, usage).

Operation ids are the operations' function names (``start_run``, ``get_run``): a generated
client's methods read as verbs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from inspect import iscoroutinefunction
from typing import Any, cast

from django.contrib.auth import authenticate
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.urls import URLPattern, URLResolver
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.operation import Operation
from ninja.security import APIKeyHeader

from runs.actions import RunStateError
from runs.api.token_auth import refusal, require_write
from runs.workflows.parse import WorkflowError
from scripthut_site.input_guard import too_big_message

log = logging.getLogger("runs.api")

# -- auth ------------------------------------------------------------------------------


class TokenAuth(APIKeyHeader):
    param_name = "Authorization"
    openapi_description = 'Send "Authorization: Token <key>"; only a SHA-256 of the key is stored.'

    def authenticate(self, request: HttpRequest, key: str | None) -> User:
        if not key:
            raise AuthenticationError(message='missing Authorization header; send "Authorization: Token <key>"')
        scheme, _, raw = key.strip().partition(" ")
        raw = raw.strip()
        if scheme.lower() != "token" or not raw:
            raise AuthenticationError(message='Authorization header must be "Token <key>"')
        # runs.api.token_auth.ApiTokenBackend, behind django-axes' lockout check (429 when locked out).
        user = authenticate(request, api_token=raw)
        if not isinstance(user, User):
            raise AuthenticationError(message=refusal(request) or "invalid API token")
        require_write(request)  # a read-scoped token: 403 on every operation that changes something
        return user


class ScriptHutAPI(NinjaAPI):
    """NinjaAPI whose URLs skip LoginRequiredMiddleware (they use token auth) and whose
    405s are JSON like every other error."""

    def get_openapi_operation_id(self, operation: Operation) -> str:
        return operation.view_func.__name__

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        # A text answer (a log, a script, events) is documented by the operation's openapi_extra:
        # drop the JSON string ninja adds beside it for ``response={200: str}``.
        schema = super().get_openapi_schema(*args, **kwargs)
        for operations in schema["paths"].values():
            for operation in operations.values():
                for answer in operation.get("responses", {}).values():
                    content = answer.get("content", {})
                    if len(content) > 1 and any(kind.startswith("text/") for kind in content):
                        content.pop("application/json", None)
        return schema

    @property
    def urls(self) -> tuple[list[URLResolver | URLPattern], str, str]:
        patterns, app_name, namespace = super().urls
        _adapt(patterns)
        return patterns, app_name, namespace


def _adapt(patterns: list[URLResolver | URLPattern]) -> None:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _adapt(pattern.url_patterns)
            continue
        login_not_required(pattern.callback)
        if not iscoroutinefunction(pattern.callback):
            pattern.callback = _json_not_allowed(pattern.callback)


def _json_not_allowed(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    # ninja answers a wrong method with a plain-text 405 that no exception handler sees.
    @wraps(view)  # keeps csrf_exempt and login_required
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            response = error(request, 405, f"method {request.method} not allowed; use {allowed}")
            response["Allow"] = allowed
        return response

    return wrapper


api = ScriptHutAPI(
    title="ScriptHut API",
    version="1",
    description='Start and follow batch-job workflow runs. Errors are `{"error": "..."}`.',
    urls_namespace="api",
    auth=TokenAuth(),
)


def caller(request: HttpRequest) -> User:
    return cast(User, cast(Any, request).auth)  # set by TokenAuth


# -- errors: always {"error": "..."} ---------------------------------------------------


def error(request: HttpRequest, status: int, message: str) -> HttpResponse:
    return api.create_response(request, {"error": message}, status=status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return error(request, 400, "; ".join(_describe(err) for err in exc.errors))


def _describe(err: dict[str, Any]) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    # ninja puts the parameter name after "body" (body.payload.x): clients only see body.x.
    if len(loc) >= 2 and loc[0] == "body" and loc[1] == "payload":
        del loc[1]
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{'.'.join(loc)}: {message[:1].lower()}{message[1:]}"


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja reports an unparsable body as a bare "Cannot parse request body"; say why.
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        return error(request, 400, f"malformed JSON body: {exc.__cause__}")
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return error(request, 400, "malformed JSON body: nested too deeply")
    return error(request, exc.status_code, exc.message)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error(request, 404, str(exc) or "not found")


@api.exception_handler(WorkflowError)
def _workflow_error(request: HttpRequest, exc: WorkflowError) -> HttpResponse:
    body = {"error": str(exc), "problems": [p.as_dict() for p in exc.details]}
    return api.create_response(request, body, status=400)


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # A body without Content-Length (chunked) is only measured as it is read, here.
    return error(request, 413, too_big_message(request))


@api.exception_handler(PermissionDenied)  # runs.access.AccessDenied and require_staff: the reason
def _access_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return error(request, 403, str(exc))


@api.exception_handler(RunStateError)
def _run_state_error(request: HttpRequest, exc: RunStateError) -> HttpResponse:
    return error(request, 409, str(exc))


@api.exception_handler(Exception)
def _server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("API error on %s %s", request.method, request.path)
    return error(request, 500, "internal server error")
