"""Importing scripthut.yaml into the database (the schema is in ``config_schema``).

Importing makes the database match the file, in one transaction, by name: rows are
updated in place so that runs keep their backend and workflow. Backends missing from
the file are disabled rather than deleted (runs point at them); workflows, sources and
environments missing from it are deleted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.db import models, transaction

from backends.config import backend_settings
from backends.local.settings import LocalSettings
from scripthut_site.config_schema import ConfigError, GitSourceConfig, ScriptHutConfig, load_config, load_configs

if TYPE_CHECKING:
    from backends.models import Backend

__all__ = ["ConfigError", "ImportReport", "import_config", "load_config"]


# Importing. Models are imported inside the functions so that load_config() works
# before Django is set up (for checking a file from the command line).

KINDS = ("backends", "environments", "sources", "workflows", "schedules", "settings")


class _Writer(Protocol):
    def write(self, msg: str, /) -> Any: ...


@dataclass
class ImportReport:
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    disabled: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        for kind in KINDS:
            counts = [
                f"{self.created[kind]} created",
                f"{self.updated[kind]} updated",
                f"{self.deleted[kind]} deleted",
            ]
            if kind == "backends":
                counts.insert(2, f"{self.disabled[kind]} disabled")
            lines.append(f"{kind}: {', '.join(counts)}")
        return "\n".join(lines)

    def lines(self) -> list[str]:
        """The warnings first (a summary would scroll them away), then what changed."""
        return [f"warning: {warning}" for warning in self.warnings] + self.summary().splitlines()

    def __str__(self) -> str:
        return "\n".join(self.lines())


def import_config(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    stdout: _Writer | None = None,
    strict: bool = False,
) -> ImportReport:
    """Validate a config file (or text, or several files read as one) and make the
    database match it.

    Raises ConfigError, having changed nothing, if the config has errors, or with
    ``strict`` if it has warnings (unknown keys).
    """
    config = load_configs([source] if isinstance(source, str | os.PathLike) else source)
    report = ImportReport(warnings=config.warnings())
    if strict and report.warnings:
        raise ConfigError([f"{warning} (an error with --strict)" for warning in report.warnings])
    with transaction.atomic():
        backends = _import_backends(config, report)
        _import_environments(config, report)
        _import_sources(config, backends, report)
        _import_workflows(config, backends, report)
        _import_schedules(config, report)
        _import_settings(config, report)
    if stdout is not None:
        for line in report.lines():
            stdout.write(line + "\n")
    return report


def import_file(*paths: Path, strict: bool = False) -> int:
    """Import config files (read as one) for the command line (``import-config``,
    ``serve``): the warnings first (a summary would scroll them away), then what changed;
    the exit code. ``strict``: any warning is an error and nothing is changed."""
    named = ", ".join(map(str, paths))
    try:
        report = import_config(list(paths), strict=strict)
    except ConfigError as exc:
        print(f"{named}: the config has errors, nothing was changed:", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Imported {named}: {report.summary()}")
    return 0


def _upsert(model: type[models.Model], lookup: dict[str, Any], values: dict[str, Any]) -> tuple[Any, str]:
    """Create or update one row; return it and "created", "updated" or "unchanged"."""
    obj = model._default_manager.filter(**lookup).first()
    if obj is None:
        return model._default_manager.create(**lookup, **values), "created"
    changed = [name for name, value in values.items() if getattr(obj, name) != value]
    for name in changed:
        setattr(obj, name, values[name])
    if changed:
        obj.save(update_fields=changed)
    return obj, "updated" if changed else "unchanged"


def _share(obj: Any, group_names: list[str], outcome: str) -> str:
    """Share a backend, source or workflow with these groups (made if new, e.g. before the
    first LDAP login of their members); an unchanged row whose groups changed is updated."""
    from django.contrib.auth.models import Group

    groups = [Group.objects.get_or_create(name=name)[0] for name in group_names]
    if {g.pk for g in groups} == set(obj.allowed_groups.values_list("pk", flat=True)):
        return outcome
    obj.allowed_groups.set(groups)
    return "updated" if outcome == "unchanged" else outcome


def _delete_missing(model: type[models.Model], names: list[str]) -> int:
    _, deleted = model._default_manager.exclude(name__in=names).delete()
    return deleted.get(model._meta.label, 0)


def _count(report: ImportReport, kind: str, outcome: str) -> None:
    if outcome == "created":
        report.created[kind] += 1
    elif outcome == "updated":
        report.updated[kind] += 1


def _import_backends(config: ScriptHutConfig, report: ImportReport) -> dict[str, Backend]:
    from backends.models import Backend

    rows: dict[str, Backend] = {}
    for item in config.backends:
        values = {
            "kind": item.type,
            "settings": backend_settings(item),
            "max_concurrent": item.max_concurrent,
            # Remote backends follow the global poll interval (settings.poll_interval).
            "poll_interval": item.poll_interval if isinstance(item, LocalSettings) else None,
            "enabled": True,
        }
        rows[item.name], outcome = _upsert(Backend, {"name": item.name}, values)
        _count(report, "backends", _share(rows[item.name], item.allowed_groups, outcome))
    # Runs keep pointing at a removed backend, so it is disabled, not deleted.
    report.disabled["backends"] = (
        Backend.objects.filter(enabled=True).exclude(name__in=list(rows)).update(enabled=False)
    )
    return rows


def _import_environments(config: ScriptHutConfig, report: ImportReport) -> None:
    from backends.models import Environment

    for item in config.environments:
        values = {"variables": item.variables, "extra_init": item.extra_init or ""}
        _, outcome = _upsert(Environment, {"name": item.name}, values)
        _count(report, "environments", outcome)
    report.deleted["environments"] = _delete_missing(Environment, [item.name for item in config.environments])


def _import_sources(config: ScriptHutConfig, backends: dict[str, Backend], report: ImportReport) -> None:
    from sources.models import Source

    for item in config.sources:
        values: dict[str, Any] = {
            "kind": item.type,
            "backend": backends[item.backend],
            "workflows_glob": item.workflows_glob,
            "url": "",
            "branch": "main",
            "deploy_key": "",
            "clone_dir": "~/scripthut-repos",
            "postclone": "",
            "path": "",
        }
        if isinstance(item, GitSourceConfig):
            values.update(
                url=item.url,
                branch=item.branch,
                deploy_key=item.deploy_key or "",
                clone_dir=item.clone_dir,
                postclone=item.postclone or "",
            )
        else:
            values["path"] = item.path
        source, outcome = _upsert(Source, {"name": item.name}, values)
        _count(report, "sources", _share(source, item.allowed_groups, outcome))
    report.deleted["sources"] = _delete_missing(Source, [item.name for item in config.sources])


def _import_workflows(config: ScriptHutConfig, backends: dict[str, Backend], report: ImportReport) -> None:
    from runs.models import Workflow

    for item in config.workflows:
        values = {
            "backend": backends[item.backend],
            "command": item.command,
            "max_concurrent": item.max_concurrent,
            "description": item.description or "",
            "git": item.git.model_dump(mode="json") if item.git else None,
        }
        workflow, outcome = _upsert(Workflow, {"name": item.name}, values)
        _count(report, "workflows", _share(workflow, item.allowed_groups, outcome))
    # Runs of a deleted workflow keep running: Run.workflow is SET_NULL and the run
    # keeps its own copy of the name.
    report.deleted["workflows"] = _delete_missing(Workflow, [item.name for item in config.workflows])


def _import_schedules(config: ScriptHutConfig, report: ImportReport) -> None:
    """Schedules by name, checked as the API checks them (owner, access, workflow file).
    Schedules missing from the file are kept: they may have been made on /schedules or
    through the API."""
    from runs.models import Schedule
    from runs.schedules.edit import save_schedule, values_of
    from runs.workflows.parse import WorkflowError

    errors = []
    for index, item in enumerate(config.schedules):
        values = item.model_dump()
        existing = Schedule.objects.select_related("owner", "workflow", "source").filter(name=item.name).first()
        if existing is not None and values_of(existing) == values:
            continue
        try:
            save_schedule(values, by=None, schedule=existing)
        except WorkflowError as exc:
            errors += [f"schedules[{index}].{p.field}: {p.message}" for p in exc.details]
            continue
        _count(report, "schedules", "updated" if existing else "created")
    if errors:
        raise ConfigError(errors)


def _import_settings(config: ScriptHutConfig, report: ImportReport) -> None:
    from runs.models import PortalSettings

    settings = config.settings
    values = {
        "poll_interval": settings.poll_interval,
        "server_host": settings.server_host,
        "server_port": settings.server_port,
        "sources_cache_dir": settings.sources_cache_dir or "",
        "filter_user": settings.filter_user or "",
        "strict_workflows": settings.strict_workflows,
        "contact": settings.contact or "",
        "retention_days": settings.retention_days,
        "keep_runs_days": settings.keep_runs_days,
        "pricing": config.pricing.model_dump(mode="json") if config.pricing else None,
    }
    _, outcome = _upsert(PortalSettings, {"pk": 1}, values)
    _count(report, "settings", outcome)
