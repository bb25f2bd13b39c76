"""Settings page: each user's own cluster identities, on backends with ``ssh.identity: per_user``.

Listing never decrypts a stored key (the fingerprint stands for it), and no response
carries a key or passphrase back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from backends.forms import IdentityForm
from backends.models import Backend, ClusterIdentity
from runs.access import require_backend, usable_backends


@dataclass
class IdentityRow:
    backend: Backend
    identity: ClusterIdentity | None
    form: IdentityForm


def _per_user_backend(name: str) -> Backend:
    backend = get_object_or_404(Backend, name=name)
    if not backend.takes_identities:
        # Its jobs run as the account of the config: there is nothing of the user's to store.
        raise Http404(f"backend {name!r} does not take user identities")
    return backend


def _user(request: HttpRequest) -> User:
    return cast(User, request.user)  # LoginRequiredMiddleware: never anonymous here


def _mine(request: HttpRequest, backend: Backend | None = None) -> dict[int, ClusterIdentity]:
    """The user's identities by backend, without reading (decrypting) their secrets."""
    found = ClusterIdentity.objects.filter(user=_user(request)).defer("private_key", "passphrase")
    if backend is not None:
        found = found.filter(backend=backend)
    return {identity.backend_id: identity for identity in found}


def _form(backend: Backend, existing: ClusterIdentity | None, data: QueryDict | None = None) -> IdentityForm:
    # One form per backend on the page: ids must differ, field names stay plain.
    return IdentityForm(data, existing=existing, auto_id=f"id_%s_{backend.pk}")


def _page(request: HttpRequest, bound: IdentityForm | None = None, bound_to: Backend | None = None) -> HttpResponse:
    mine = _mine(request)
    rows = []
    for backend in (b for b in usable_backends(request.user) if b.takes_identities):
        identity = mine.get(backend.pk)
        form = bound if bound is not None and backend == bound_to else _form(backend, identity)
        rows.append(IdentityRow(backend, identity, form))
    status = 400 if bound is not None else 200
    return render(request, "backends/identities.html", {"rows": rows}, status=status)


@require_GET
def identities(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
def identity_save(request: HttpRequest, backend: str) -> HttpResponse:
    target = _per_user_backend(backend)
    require_backend(request.user, target)
    existing = _mine(request, target).get(target.pk)
    form = _form(target, existing, request.POST)
    if not form.is_valid():
        return _page(request, form, target)
    identity = form.save(_user(request), target)
    messages.success(request, f"Saved: your jobs on {target.name} run as {identity.username}.")
    return redirect("identities")


@require_POST
def identity_delete(request: HttpRequest, backend: str) -> HttpResponse:
    target = _per_user_backend(backend)
    for identity in _mine(request, target).values():
        identity.delete()
        messages.success(request, f"Removed your cluster identity for {target.name}.")
    return redirect("identities")
