"""The ``scripthut`` command: serve, run, import-config, createtoken, and Django's commands.

scripthut serve [--config F] [--host H] [--port P]
scripthut run WORKFLOW.json --backend NAME [--max-concurrent N] [--wait] [--notify ON [--notify-webhook URL]]
scripthut import-config F
scripthut createtoken USERNAME
scripthut worker [--concurrency N] [--pool prefork|threads|solo]   (deployment: runs ticks; needs REDIS_URL)
scripthut beat                                     (deployment: queues each backend's tick when due)
scripthut setup-aws-ec2 [--region R --yes ...]     (guided set-up of an ec2 backend; every prompt is a flag)
scripthut rotate-keys [--new-key]                  (re-encrypt stored secrets with the newest key)
scripthut pricing import FILE | refresh | recompute (EC2 prices for cost: runs.costing)
scripthut backup FILE | restore FILE                 (the embedded SQLite database: scripthut_site.backup)
scripthut cleanup [--dry-run]                        (retention: finished runs' job files, old runs)
scripthut recount [--run ID] [--check]               (check the stored task counts against the tasks; repair)
scripthut migrate | createsuperuser | shell | ...   (any manage.py command)

Against a portal, from anywhere (scripthut_site.remote, over its JSON API): ``scripthut login URL``,
then run, runs, status, logs, cancel, relaunch, sources, sync, backends, workflows, whoami. With
``SCRIPTHUT_URL`` set or after ``login``, ``scripthut run`` goes to the portal too; without
either it works on the portal's host, straight against its database, as above.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scripthut_site import remote

COMMANDS = (
    "serve",
    "run",
    "import-config",
    "createtoken",
    "worker",
    "beat",
    "setup-aws-ec2",
    "backup",
    "restore",
    "cleanup",
)
DASHED_COMMANDS = ("rotate-keys",)  # Django commands spelled with a dash on our command line
DJANGO_COMMANDS_SHOWN = {
    "rotate-keys": "re-encrypt stored secrets with the newest key [--new-key]",
    "pricing": "EC2 prices for cost: import FILE | refresh | recompute [--run ID]",
    "recount": "check the stored task counts against the tasks and repair them [--run ID] [--check]",
    "migrate": "bring the database up to date (any other Django command works too: shell, ...)",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and (argv[0] in remote.REMOTE_COMMANDS or (argv[0] == "run" and remote.configured())):
        return remote.main(argv)  # no Django, no database: the portal's API
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        if not argv or argv[0].startswith("-"):
            argv = ["serve", *argv]  # `scripthut --config F` works as in the original
        else:
            return _django_command(argv)
    args = _parser().parse_args(argv)
    # Only a config nobody named means the built-in demo; one named by --config or by
    # SCRIPTHUT_CONFIG must exist, and both say so the same way.
    named = (args.config or os.environ.get("SCRIPTHUT_CONFIG")) if hasattr(args, "config") else None
    if named:
        config = Path(named).expanduser()
        if not config.is_file():
            print(f"config file {named} does not exist (as {config.resolve()})", file=sys.stderr)
            return 2
        os.environ["SCRIPTHUT_CONFIG"] = str(config.resolve())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")
    import django

    django.setup()
    handler = {
        "serve": serve,
        "run": run,
        "import-config": import_config,
        "createtoken": createtoken,
        "worker": worker,
        "beat": beat,
        "setup-aws-ec2": setup_aws_ec2,
        "backup": backup,
        "restore": restore,
        "cleanup": cleanup,
    }[args.command]
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripthut", description="ScriptHut batch-job portal")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="migrate, import the config and start the portal")
    p.add_argument("--config", help="config file (default: $SCRIPTHUT_CONFIG or ./scripthut.yaml)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--strict", action="store_true", help="refuse a config with warnings (unknown keys)")
    p = sub.add_parser("run", help="create a run from a workflow JSON file")
    p.add_argument("workflow", help='workflow JSON file (an array of tasks or {"tasks": [...]}), - for stdin')
    p.add_argument("--backend", required=True)
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--name", help="workflow name shown on the run (default: the file name)")
    p.add_argument("--user", default=os.environ.get("SCRIPTHUT_USER", "admin"), help="owner of the run")
    p.add_argument("--wait", action="store_true", help="show progress; exit 0 only if the run completes")
    p.add_argument("--notify", choices=("always", "failure", "never"), help="notify when the run ends (default: prefs)")
    p.add_argument("--notify-webhook", metavar="URL", help="webhook for this run's notifications")
    p.add_argument(
        "--notify-email",
        metavar="ADDRESS",
        help="email address for this run's notifications (one the portal trusts for you)",
    )
    p.add_argument("--config")
    p = sub.add_parser("import-config", help="load a scripthut.yaml (or several, read as one) into the database")
    p.add_argument("file", nargs="+")
    p.add_argument("--strict", action="store_true", help="refuse a config with warnings (unknown keys)")
    p = sub.add_parser("createtoken", help="print a new API token for a user")
    p.add_argument("username")
    p = sub.add_parser("worker", help="run backend ticks queued by `scripthut beat` and by user actions")
    p.add_argument("--concurrency", type=int, help="ticks at once (default: number of CPUs)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--loglevel", default="warning")
    p.add_argument("--hostname", help="worker name (default: celery@HOST)")
    p = sub.add_parser("beat", help="queue a tick for each backend every poll_interval (run exactly one)")
    p.add_argument("--loglevel", default="warning")
    from backends.ec2 import wizard

    wizard.add_arguments(sub.add_parser("setup-aws-ec2", help="set up an AWS EC2 backend (IAM stack, config stanza)"))
    p = sub.add_parser("backup", help="copy the embedded SQLite database to FILE, also while the portal runs")
    p.add_argument("file")
    p = sub.add_parser("restore", help="replace the embedded SQLite database by a backup (stop the portal first)")
    p.add_argument("file")
    p = sub.add_parser("cleanup", help="remove finished runs' job files (retention_days) and old runs (keep_runs_days)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    # Django management commands that main() hands to Django; listed so that --help names them.
    for name, text in DJANGO_COMMANDS_SHOWN.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def setup_aws_ec2(args: argparse.Namespace) -> int:
    from backends.ec2 import wizard

    return wizard.run(args)


def _django_command(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scripthut_site.settings")
    if argv[0] in DASHED_COMMANDS:
        argv = [argv[0].replace("-", "_"), *argv[1:]]
    from django.core.management import execute_from_command_line

    execute_from_command_line(["scripthut", *argv])
    return 0


def serve(args: argparse.Namespace) -> int:
    from scripthut_site import serve

    return serve.serve(host=args.host, port=args.port, strict=args.strict)


def backup(args: argparse.Namespace) -> int:
    from scripthut_site import backup

    return backup.backup(Path(args.file).expanduser())


def restore(args: argparse.Namespace) -> int:
    from scripthut_site import backup

    return backup.restore(Path(args.file).expanduser())


def cleanup(args: argparse.Namespace) -> int:
    from runs import retention

    report = retention.cleanup(dry_run=args.dry_run)
    for line in report.lines(args.dry_run):
        print(line)
    return 1 if report.problems else 0


def worker(args: argparse.Namespace) -> int:
    argv = ["worker", "--pool", args.pool, "--loglevel", args.loglevel]
    argv += ["--concurrency", str(args.concurrency)] if args.concurrency else []
    argv += ["--hostname", args.hostname] if args.hostname else []
    return _celery(argv)


def beat(args: argparse.Namespace) -> int:
    from django.conf import settings

    # Beat's own bookkeeping (when each entry last ran) lives with the portal's data.
    return _celery(["beat", "--schedule", str(settings.DATA_DIR / "celerybeat-schedule"), "--loglevel", args.loglevel])


def _celery(argv: list[str]) -> int:
    from django.conf import settings

    if settings.EMBEDDED:
        print("set REDIS_URL (the broker) first: without it `scripthut serve` ticks in-process", file=sys.stderr)
        return 2
    from scripthut_site.celery import app

    return int(app.start(argv=argv) or 0)


def import_config(args: argparse.Namespace) -> int:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    from scripthut_site.config import import_file

    return import_file(*[Path(name) for name in args.file], strict=args.strict)


def createtoken(args: argparse.Namespace) -> int:
    from django.contrib.auth.models import User

    from runs.audit import trail as audit
    from runs.models import ApiToken, AuditEvent

    try:
        user = User.objects.get(username=args.username)
    except User.DoesNotExist:
        print(f"no user named {args.username!r}", file=sys.stderr)
        return 1
    key = ApiToken.issue(user, name="scripthut createtoken")
    audit.record(AuditEvent.Action.TOKEN_CREATED, f"token {key[: ApiToken.PREFIX_LENGTH]}… of {user.username}",
                 name="scripthut createtoken", scope=ApiToken.Scope.WRITE, expires_at=None)  # fmt: skip
    print(key)
    return 0


def run(args: argparse.Namespace) -> int:
    from django.conf import settings
    from django.contrib.auth.models import User

    from backends.models import Backend
    from runs.access import AccessDenied
    from runs.actions import create_run
    from runs.notify.spec import NotifyError, spec_from_options
    from runs.workflows.parse import WorkflowError

    try:
        text = sys.stdin.read() if args.workflow == "-" else Path(args.workflow).read_text()
    except OSError as exc:
        print(f"cannot read {args.workflow}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        backend = Backend.objects.get(name=args.backend)
    except Backend.DoesNotExist:
        names = ", ".join(Backend.objects.values_list("name", flat=True)) or "none configured"
        print(f"unknown backend {args.backend!r} (known: {names})", file=sys.stderr)
        return 2
    try:
        owner = User.objects.get(username=args.user)
    except User.DoesNotExist:
        print(f"no user named {args.user!r}; pass --user or set SCRIPTHUT_USER", file=sys.stderr)
        return 2
    name = args.name or Path(args.workflow).stem
    try:
        on, webhook, email = (getattr(args, key, None) for key in ("notify", "notify_webhook", "notify_email"))
        notify = spec_from_options(on, webhook, email, owner=owner)
    except NotifyError as exc:
        print(f"invalid notification options: {exc}; nothing was submitted", file=sys.stderr)
        return 2
    try:
        run = create_run(
            owner=owner,
            backend=backend,
            payload=text,
            workflow_name=name,
            max_concurrent=args.max_concurrent,
            notify=notify,
        )
    except AccessDenied as exc:
        print(f"refused: {exc}; nothing was submitted", file=sys.stderr)
        return 3
    except WorkflowError as exc:
        print(f"invalid workflow {args.workflow}: nothing was submitted", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    for warning in run.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Created run {run.pk} with {run.tasks.count()} tasks on {backend.name}.")
    if not args.wait:
        if settings.EMBEDDED:
            print("It starts when `scripthut serve` is running (or use --wait to drive it from here).")
        return 0
    return _wait(run)


def _wait(run: object) -> int:
    from django.conf import settings
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from runs.engine import states
    from runs.engine.tick import tick_due_backends
    from runs.engine.waiting import shown_reason
    from runs.models import Run, Task
    from runs.notify.deliver import deliver_due

    assert isinstance(run, Run)
    total = run.tasks.count()
    with Progress(
        TextColumn("run {task.fields[run_id]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} finished"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
    ) as progress:
        bar = progress.add_task("run", total=total, run_id=run.pk, counts="")
        said = ""
        while True:
            if settings.EMBEDDED:
                tick_due_backends()  # no workers in embedded mode: this process drives the run
            run.refresh_from_db()
            counts = Task.objects.state_counts([run.pk])[run.pk]
            total = sum(counts.values())
            finished = sum(counts.get(s, 0) for s in states.FINISHED)
            summary = " ".join(f"{state}={n}" for state, n in sorted(counts.items()) if n)
            progress.update(bar, completed=finished, total=total, counts=summary)
            said = _say_why_waiting(run, said, progress.console.print)
            if run.is_finished:
                break
            time.sleep(0.5)
    if settings.EMBEDDED:
        deliver_due()  # no workers: this process sends the run's notifications too (failures: `serve` retries)
    print(f"Run {run.pk} {run.status}.")
    for task in run.tasks.exclude(state=Task.State.COMPLETED).order_by("position")[:20]:
        print(f"  {task.task_id}: {task.state} {shown_reason(task)}".rstrip())
    if run.error:
        print(f"  error: {run.error}")
    return 0 if run.status == Run.Status.COMPLETED else 1


def _say_why_waiting(run: object, said: str, say: Callable[[str], None]) -> str:
    """Print why ready tasks wait (backend full, run limit), once each time it changes."""
    from runs.models import Run

    assert isinstance(run, Run)
    reason = run.waiting_reason  # kept per run by the tick (runs.engine.waiting)
    if reason and reason != said:
        say(f"run {run.pk} {reason}")
    return reason


if __name__ == "__main__":
    sys.exit(main())
