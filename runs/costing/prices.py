"""EC2 prices and instance shapes, read from an instances.vantage.sh ``instances.json``.

The file is a JSON array of instance types: ``instance_type``, ``vCPU``, ``memory`` (GiB) and
``pricing: {region: {"linux": {"ondemand": "0.17", "spot_avg": ..., ...}}}`` (USD per hour,
as strings). Only the Linux prices are kept, in the ``InstancePrice`` table, so that every
process (web, workers) reads the same prices without parsing a large file.

``pricing.source`` says where the file is: a path (a portal without internet needs no
more) is imported again when the file changes; a URL is fetched at most once a day into
the data dir, and a failed fetch keeps the last good copy (and the stored prices).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs.costing.models import InstancePrice, PriceList

log = logging.getLogger("runs.costing")

PRICE_TYPES = ("ondemand", "spot_min", "spot_avg", "spot_max")
CACHE_FOR = timedelta(hours=24)  # a fetched file is used this long before it is fetched again
RETRY_AFTER = timedelta(hours=1)  # after a failed fetch
FETCH_TIMEOUT = (5, 120)  # seconds to connect, to read (the real file is tens of MB)


class PricingError(Exception):
    """The prices cannot be read (missing file, not the instances.json format, fetch failed)."""


# -- reading the format ------------------------------------------------------------------


def parse_instances(raw: bytes | str) -> list[InstancePrice]:
    """The Linux prices in an instances.json text, as unsaved rows; PricingError if none."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PricingError(f"not JSON: {exc}") from None
    if not isinstance(data, list):
        raise PricingError("not an instances.json file: expected a JSON array of instance types")
    rows = [row for item in data if isinstance(item, dict) for row in _rows(item)]
    if not rows:
        raise PricingError("no instance type with vCPU, memory and Linux prices found")
    return rows


def _rows(item: dict[str, Any]) -> list[InstancePrice]:
    name, vcpus, memory = item.get("instance_type"), item.get("vCPU"), item.get("memory")
    pricing = item.get("pricing")
    if not isinstance(name, str) or not isinstance(pricing, dict):
        return []
    if not isinstance(vcpus, int | float) or not isinstance(memory, int | float) or min(vcpus, memory) <= 0:
        return []
    rows = []
    for region, platforms in pricing.items():
        linux = platforms.get("linux") if isinstance(platforms, dict) else None
        if not isinstance(linux, dict):
            continue
        prices = {kind: _price(linux.get(kind)) for kind in PRICE_TYPES}
        if any(value is not None for value in prices.values()):
            rows.append(
                InstancePrice(
                    region=str(region), instance_type=name, vcpus=int(vcpus), memory_gib=float(memory), **prices
                )
            )
    return rows


def _price(value: Any) -> Decimal | None:
    """``"0.085"`` as a Decimal; None for missing, ``"N/A"`` or negative values."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


# -- storing -----------------------------------------------------------------------------


def store(rows: list[InstancePrice], *, source: str, prices_date: datetime, fingerprint: str) -> int:
    """Replace the stored prices with these, in one transaction."""
    with transaction.atomic():
        InstancePrice.objects.all().delete()
        InstancePrice.objects.bulk_create(rows, batch_size=2000)
        PriceList.objects.update_or_create(
            pk=1,
            defaults={
                "source": source,
                "prices_date": prices_date,
                "imported_at": timezone.now(),
                "fingerprint": fingerprint,
                "last_error": "",
            },
        )
    return len(rows)


def import_file(path: str | os.PathLike[str], *, source: str | None = None) -> int:
    """Import a file (``scripthut pricing import FILE``): the number of prices stored."""
    file = Path(path).expanduser()
    try:
        raw, stat = file.read_bytes(), file.stat()
    except OSError as exc:
        raise PricingError(f"{path}: cannot read ({exc.strerror or exc})") from None
    rows = parse_instances(raw)
    return store(
        rows,
        source=source or str(file),
        prices_date=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
        fingerprint=_file_fingerprint(file, stat),
    )


def _file_fingerprint(file: Path, stat: os.stat_result) -> str:
    return f"{file}:{stat.st_size}:{stat.st_mtime_ns}"


# -- keeping them current ----------------------------------------------------------------


def source_of(pricing: dict[str, Any]) -> str:
    return str(pricing.get("source") or settings.SCRIPTHUT_PRICING_URL)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def cache_file() -> Path:
    return Path(settings.DATA_DIR) / "pricing" / "instances.json"


def refresh(pricing: dict[str, Any]) -> None:
    """Make the stored prices those of ``pricing``'s source, if due; never raises.

    One process at a time: the others go on with the stored prices rather than wait for a
    download. A failure is logged and kept in ``PriceList.last_error``; the stored prices stay.
    """
    source = source_of(pricing)
    PriceList.objects.get_or_create(pk=1)
    with transaction.atomic():
        if PriceList.objects.select_for_update(skip_locked=True).filter(pk=1).first() is None:
            return  # another process is refreshing them
        try:
            if is_url(source):
                _refresh_from_url(source)
            else:
                _refresh_from_path(source)
        except PricingError as exc:
            log.warning("prices from %s not updated: %s", source, exc)
            PriceList.objects.filter(pk=1).update(
                last_error=str(exc)[:2000], next_check_at=timezone.now() + RETRY_AFTER
            )


def _refresh_from_path(path: str) -> None:
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError as exc:
        raise PricingError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if PriceList.load().fingerprint != _file_fingerprint(file, stat):
        import_file(file, source=path)


def _refresh_from_url(url: str) -> None:
    current = PriceList.load()
    now = timezone.now()
    if current.source == url and current.next_check_at and now < current.next_check_at:
        return
    cached = _fresh_cache(now)
    if cached is not None and current.source != url:
        _import_cache(url, cached)  # fetched lately, e.g. before the database was reset
    elif cached is None:
        _fetch(url, current)
    PriceList.objects.filter(pk=1).update(next_check_at=now + CACHE_FOR if cached is None else cached + CACHE_FOR)


def _fresh_cache(now: datetime) -> datetime | None:
    """When the cached copy was fetched, if within the last 24 hours."""
    try:
        fetched = datetime.fromtimestamp(cache_file().stat().st_mtime, tz=UTC)
    except OSError:
        return None
    return fetched if now - fetched < CACHE_FOR else None


def _import_cache(url: str, fetched: datetime) -> None:
    rows = parse_instances(cache_file().read_bytes())
    store(rows, source=url, prices_date=fetched, fingerprint=f"{url}@{fetched.isoformat()}")


@dataclass(frozen=True)
class Fetched:
    body: bytes
    at: datetime  # the prices' date: the server's Last-Modified, else when fetched


def _fetch(url: str, current: PriceList) -> None:
    """Fetch the file; keep it only if it parses. On failure, fall back on the last good copy."""
    try:
        fetched = _download(url)
        rows = parse_instances(fetched.body)
    except PricingError:
        if current.source != url and cache_file().is_file():
            # The stored prices are another source's: the last good copy of this one is better.
            _import_cache(url, datetime.fromtimestamp(cache_file().stat().st_mtime, tz=UTC))
        raise
    _write_cache(fetched.body)
    store(rows, source=url, prices_date=fetched.at, fingerprint=f"{url}@{fetched.at.isoformat()}")


def _download(url: str) -> Fetched:
    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise PricingError(f"cannot fetch {url}: {exc}") from None
    return Fetched(response.content, _last_modified(response.headers.get("Last-Modified")) or timezone.now())


def _last_modified(header: str | None) -> datetime | None:
    try:
        return parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return None


def _write_cache(body: bytes) -> None:
    """Replace the cached copy atomically: a crash leaves the old one or the new one."""
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(body)
    os.replace(partial, path)
