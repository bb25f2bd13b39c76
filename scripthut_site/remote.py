"""The ``scripthut`` command against a portal over HTTPS (scripthut_site.client), never a database:

scripthut login URL [--token T]                  (keeps URL and token in ~/.config/scripthut/credentials, 0600)
scripthut run WORKFLOW.json --backend B [--max-concurrent N] [--name N] [--wait] [--notify ...]
scripthut run --source NAME FILE [--wait] | scripthut run --workflow NAME [--wait]
scripthut runs [--status S] | status RUN | logs RUN TASK [--error] [--follow] [--tail N]
scripthut cancel RUN [TASK] | relaunch RUN | sources | sync SOURCE | backends | workflows | whoami
(--json on each for scripts)

Where: ``SCRIPTHUT_URL`` and ``SCRIPTHUT_TOKEN``, else the credentials file. Exit codes: 0
completed (or done), 1 a run failed or was cancelled (or a sync failed), 2 invalid input, 3 not
allowed (refused, expired or revoked token), 4 the portal could not be reached. Every error
is one line on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from scripthut_site.client import EXIT_FAILED, EXIT_OK, Client, ClientError

REMOTE_COMMANDS = (
    "login", "runs", "status", "logs", "cancel", "relaunch", "sources", "sync", "backends", "workflows", "whoami",
)  # fmt: skip
STATES = ("pending", "running", "completed", "failed", "cancelled")


def credentials_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "scripthut" / "credentials"


def configured() -> tuple[str, str] | None:
    """(URL, token) from SCRIPTHUT_URL + SCRIPTHUT_TOKEN, else from the credentials file."""
    url, token = os.environ.get("SCRIPTHUT_URL", ""), os.environ.get("SCRIPTHUT_TOKEN", "")
    if url:
        return url, token or _saved().get("token", "")
    saved = _saved()
    return (saved["url"], saved.get("token", "")) if saved.get("url") else None


def _saved() -> dict[str, str]:
    try:
        data = json.loads(credentials_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(url: str, token: str) -> Path:
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file keeps its mode otherwise
        json.dump({"url": url, "token": token}, out)
    return path


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="scripthut", description="ScriptHut, against a portal")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("login", help="keep a portal's URL and your token for the commands below")
    p.add_argument("url")
    p.add_argument("--token", help="default: $SCRIPTHUT_TOKEN, else asked for")
    p = sub.add_parser("run", help="start a run: of a workflow file, a source's file or a configured workflow")
    p.add_argument("file", nargs="?", help="workflow JSON file (- for stdin), or with --source the source's file")
    p.add_argument("--backend")
    p.add_argument("--source")
    p.add_argument("--workflow")
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--name")
    p.add_argument("--wait", action="store_true", help="show progress; exit 0 only if the run completes")
    p.add_argument("--notify", choices=("always", "failure", "never"))
    p.add_argument("--notify-webhook", metavar="URL")
    p.add_argument("--notify-email", metavar="ADDRESS")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("runs", help="your runs, newest first")
    p.add_argument("--status", choices=STATES)
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("status", help="one run and its tasks")
    p.add_argument("run")
    p = sub.add_parser("logs", help="a task's log")
    p.add_argument("run")
    p.add_argument("task")
    p.add_argument("--error", action="store_true", help="the error log instead of the output")
    p.add_argument("--follow", action="store_true", help="follow it until the task ends")
    p.add_argument("--tail", type=int, help="only the last N lines")
    p = sub.add_parser("cancel", help="cancel a run, or one task of it")
    p.add_argument("run")
    p.add_argument("task", nargs="?")
    p = sub.add_parser("relaunch", help="run a finished run's unsuccessful tasks again")
    p.add_argument("run")
    p = sub.add_parser("sync", help="sync a source")
    p.add_argument("source")
    for name, text in (("sources", "sources"), ("backends", "backends"), ("workflows", "workflows"), ("whoami", "")):
        sub.add_parser(name, help=f"the {text} you may use" if text else "who your token is")
    for action in sub.choices.values():
        if not any(a.dest == "json" for a in action._actions):
            action.add_argument("--json", action="store_true", help="JSON, for scripts")
    return top


def _token_joined(argv: list[str]) -> list[str]:
    """``--token VALUE`` as ``--token=VALUE``: a token may begin with "-" (token_urlsafe),
    which argparse would take for an option."""
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--token":
            value = next(words, None)
            joined.append(word if value is None else f"--token={value}")
        else:
            joined.append(word)
    return joined


def main(argv: list[str]) -> int:
    args = parser().parse_args(_token_joined(argv))
    try:
        if args.command == "login":
            return login(args)
        where = configured()
        if where is None:
            raise ClientError("not logged in: run `scripthut login URL`, or set SCRIPTHUT_URL and SCRIPTHUT_TOKEN")
        if not where[1]:
            raise ClientError(f"no API token for {where[0]}: set SCRIPTHUT_TOKEN, or run `scripthut login {where[0]}`")
        with Client(*where) as client:
            return int(COMMANDS[args.command](client, args))
    except ClientError as exc:
        print(f"scripthut: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def login(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("SCRIPTHUT_TOKEN") or getpass.getpass("API token (from /settings/tokens): ")
    if not token.strip():
        raise ClientError("no token given")
    with Client(args.url, token.strip()) as client:
        me = client.me()
    path = _save(args.url.rstrip("/"), token.strip())
    print(f"Logged in to {args.url} as {me['username']} (token scope: {me['token_scope']}); saved in {path}.")
    return EXIT_OK


def _print(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(lines) if lines else "(none)")


def _notify(args: argparse.Namespace) -> dict[str, Any] | None:
    spec = {"on": args.notify, "webhook": args.notify_webhook, "email": args.notify_email}
    return {k: v for k, v in spec.items() if v} or None


def run(client: Client, args: argparse.Namespace) -> int:
    options = {"max_concurrent": args.max_concurrent, "notify": _notify(args)}
    if sum(bool(x) for x in (args.source, args.workflow, args.backend)) != 1 or bool(args.file) == bool(args.workflow):
        raise ClientError("give WORKFLOW.json --backend B, or --source NAME FILE, or --workflow NAME")
    if args.workflow:
        created = client.run_workflow(args.workflow, **options)
    elif args.source:
        created = client.run_source(args.source, args.file, **options)
    else:
        text = sys.stdin.read() if args.file == "-" else args.file
        name = args.name or (Path(args.file).stem if args.file != "-" else "stdin")
        created = client.run(text, backend=args.backend, name=name, **options)
    run_id = created["id"]
    details = client.status(run_id, limit=1)
    if args.json and not args.wait:
        print(json.dumps(details, indent=2, default=str))
        return EXIT_OK
    print(f"Created run {run_id} with {details['task_count']} tasks on {details['backend']}.")
    return _wait(client, run_id, args.json) if args.wait else EXIT_OK


def _wait(client: Client, run_id: str, as_json: bool) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("run {task.fields[run_id]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} finished"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        disable=as_json,
    ) as progress:
        bar = progress.add_task("run", total=None, run_id=run_id, counts="")

        def show(run: dict[str, Any]) -> None:
            counts = run["counts"]
            finished = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled", "dep_failed"))
            summary = " ".join(f"{state}={n}" for state, n in sorted(counts.items()) if n)
            progress.update(bar, completed=finished, total=run["task_count"], counts=summary)

        run = client.wait(run_id, poll=1.0, on_progress=show)
    if as_json:
        print(json.dumps(run, indent=2, default=str))
    else:
        print(f"Run {run_id} {run['status']}.")
        for task in [t for t in run["tasks"] if t["state"] != "completed"][:20]:
            print(f"  {task['id']}: {task['state']} {task['reason']}".rstrip())
        if run["error"]:
            print(f"  error: {run['error']}")
    return EXIT_OK if run["status"] == "completed" else EXIT_FAILED


def runs(client: Client, args: argparse.Namespace) -> int:
    page = client.runs(args.status, args.limit)
    lines = [
        f"{r['id']}  {r['status']:<9}  {r['backend']:<12}  {r['workflow_name']}  ({r['created_at']})"
        for r in page["items"]
    ]
    _print(args, page, lines)
    return EXIT_OK


def status(client: Client, args: argparse.Namespace) -> int:
    run = client.status(args.run)
    counts = " ".join(f"{state}={n}" for state, n in run["counts"].items() if n)
    lines = [f"Run {run['id']} ({run['workflow_name']}) on {run['backend']}: {run['status']}  {counts}"]
    lines += [f"  {t['id']}: {t['state']} {t['reason']}".rstrip() for t in run["tasks"]]
    _print(args, run, lines)
    return EXIT_OK


def logs(client: Client, args: argparse.Namespace) -> int:
    stream = "error" if args.error else "output"
    if args.follow:
        for text in client.follow(args.run, args.task, stream):
            sys.stdout.write(text)
            sys.stdout.flush()
        return EXIT_OK
    text = client.logs(args.run, args.task, stream, args.tail)
    if args.json:
        print(json.dumps({"run": args.run, "task": args.task, "stream": stream, "text": text}))
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cancel(client: Client, args: argparse.Namespace) -> int:
    answer = client.cancel(args.run, args.task)
    what = f"task {args.task} of run {args.run}" if args.task else f"run {args.run}"
    _print(args, answer, [f"Cancelled {what}: {answer.get('state') or answer.get('status')}."])
    return EXIT_OK


def relaunch(client: Client, args: argparse.Namespace) -> int:
    answer = client.relaunch(args.run)
    _print(args, answer, [f"Relaunched {answer['requeued']} task(s) of run {args.run}: {answer['status']}."])
    return EXIT_OK


def sources(client: Client, args: argparse.Namespace) -> int:
    found = client.sources()
    lines = [f"{s['name']}  {s['type']:<4}  {s['backend']:<12}  {len(s['workflow_files'])} file(s)" for s in found]
    _print(args, found, lines)
    return EXIT_OK


def sync(client: Client, args: argparse.Namespace) -> int:
    source = client.sync(args.source)
    at = f" at {source['synced_sha'][:12]}" if source["synced_sha"] else ""
    _print(args, source, [f"Synced {source['name']}{at}: {len(source['workflow_files'])} workflow file(s)."])
    return EXIT_OK


def backends(client: Client, args: argparse.Namespace) -> int:
    found = client.backends()
    lines = [
        f"{b['name']}  {b['type']:<6}  {b['status']:<8}  {b['active']}/{b['max_concurrent']} in use" for b in found
    ]
    _print(args, found, lines)
    return EXIT_OK


def workflows(client: Client, args: argparse.Namespace) -> int:
    found = client.workflows()
    _print(args, found, [f"{w['name']}  {w['backend']:<12}  {w['description']}".rstrip() for w in found])
    return EXIT_OK


def whoami(client: Client, args: argparse.Namespace) -> int:
    me = client.me()
    groups = ", ".join(me["groups"]) or "none"
    lines = [f"{me['username']} at {client.url} ({'staff, ' if me['is_staff'] else ''}token scope {me['token_scope']})"]
    lines += [f"groups: {groups}", f"backends: {', '.join(me['backends']) or 'none'}"]
    _print(args, me, lines)
    return EXIT_OK


COMMANDS = {
    "run": run,
    "runs": runs,
    "status": status,
    "logs": logs,
    "cancel": cancel,
    "relaunch": relaunch,
    "sources": sources,
    "sync": sync,
    "backends": backends,
    "workflows": workflows,
    "whoami": whoami,
}
