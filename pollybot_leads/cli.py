"""The pollybot-leads command: `serve`, `worker` (webhook delivery), and `admin …`
commands printing one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .accounts.repository import AccountRepository
from .admin import commands as account_admin
from .admin.deletion import grace_seconds
from .app import create_app
from .errors import AppError, NotFound
from .http.context import SCOPES
from .indexes import ensure_all_indexes
from .leads.phones import is_region
from .leads.repository import LeadRepository
from .ops import backup
from .ops.server import run, serve_app
from .ops.workers import run_workers
from .settings import Settings, SettingsError, load_settings
from .store.client import Mongo
from .store.embedded import EmbeddedStore, EmbeddedStoreError, port_open
from .telemetry.logs import setup_logging
from .webhooks import admin as webhook_admin

log = logging.getLogger("pollybot_leads")

DEMO_FILE = "demo-credentials.json"
CURSOR_SECRET_FILE = "cursor-secret"  # noqa: S105 - a file name, not a secret


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one")
    return names


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give a zone, e.g. Z or +02:00")
    return moment.astimezone(UTC)


def _region(text: str) -> str:
    if not is_region(text):
        raise argparse.ArgumentTypeError(f"not a region code the phone library knows: {text!r}")
    return text


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pollybot-leads",
        description=__doc__,
        epilog="Settings come from config/*.toml and the environment (see the README).",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve the API (starts the embedded store when MONGODB_URI is not set)",
        description="Serve the API. Without MONGODB_URI it starts the embedded SecantusDB "
        "under PB_DATA_DIR and creates a demo workspace, chatbot and key on the first start.",
    )
    serve.add_argument("--host", help="address to bind (default: HOST, or server.host)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT, or server.port)")
    serve.add_argument(
        "--workers",
        type=_positive_int,
        help="processes serving the port, e.g. one per core (default: WORKERS, or "
        "server.workers: 1)",
    )

    admin = commands.add_parser(
        "admin",
        help="manage workspaces, chatbots, API keys and webhook endpoints; dump and restore",
        description="Manage workspaces, chatbots and API keys. Each command prints one JSON "
        'object; an error prints {"error": {...}} and exits with 1.',
    )
    sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    workspace_help = "the workspace's id (ws_…)"
    p = _command(sub, "create-workspace", "create a workspace")
    p.add_argument("--name", required=True, help="the workspace's name")
    p = _command(sub, "create-chatbot", "create a chatbot in a workspace")
    p.add_argument("--workspace", required=True, help=workspace_help)
    p.add_argument("--name", required=True, help="the chatbot's name")
    p.add_argument(
        "--default-region",
        type=_region,
        help="the region reading its phone numbers written without + (e.g. US)",
    )
    p = _command(sub, "create-key", "issue an API key; its secret is shown only now")
    p.add_argument("--workspace", required=True, help=workspace_help)
    p.add_argument("--name", help="a label for the key (e.g. the integration using it)")
    p.add_argument(
        "--rate-limit-capacity",
        type=_positive_int,
        help="this key's bucket capacity (default: ratelimit.capacity)",
    )
    p.add_argument(
        "--rate-limit-refill",
        type=_positive_float,
        help="this key's refill, tokens per second (default: ratelimit.refill_per_second)",
    )
    p.add_argument(
        "--scopes",
        type=_names,
        help=f"what it may do, comma-separated, of {', '.join(SCOPES)} (default: all)",
    )
    p.add_argument(
        "--chatbots",
        type=_names,
        help="the only chatbots it may touch, comma-separated ids (default: every one of "
        "the workspace; a key limited to chatbots cannot use the workspace-wide routes)",
    )
    p.add_argument(
        "--expires-at",
        type=_timestamp,
        help="when it stops working, ISO 8601 with a zone (e.g. 2027-01-31T00:00:00Z)",
    )
    p = _command(
        sub, "revoke-key", "revoke a key (it stops working within 30 s: auth.key_cache_seconds)"
    )
    p.add_argument("key_id", help="the key's id (key_…)")
    p = _command(sub, "list-keys", "list a workspace's keys (never their secrets)")
    p.add_argument("--workspace", required=True, help=workspace_help)
    p = _command(sub, "set-rate-limit", "change one key's rate limit")
    p.add_argument("key_id", help="the key's id (key_…)")
    p.add_argument("--capacity", type=_positive_int, required=True, help="bucket capacity")
    p.add_argument("--refill", type=_positive_float, required=True, help="tokens per second")
    p = _command(
        sub,
        "create-admin-key",
        "issue an admin key for the admin API (/api/v1/admin/…); its secret is shown only now",
    )
    p.add_argument("--name", required=True, help="a label (e.g. the platform using it)")
    p = _command(sub, "revoke-admin-key", "revoke an admin key")
    p.add_argument("key_id", help="the admin key's id (adk_…)")
    p = _command(sub, "recount", "recompute a chatbot's lead counters from its leads")
    p.add_argument("--chatbot", required=True, help="the chatbot's id (cb_…)")
    webhook_admin.add_commands(lambda name, text: _command(sub, name, text))
    backup.add_commands(lambda name, text: _command(sub, name, text))

    commands.add_parser(
        "worker",
        help="deliver webhooks (serve does too, unless webhooks.deliver is false)",
        description="Deliver webhooks until SIGTERM or Ctrl-C. Any number of workers and "
        "servers share the queue; each delivery is in one process's hands at a time.",
    )
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    """A sub-command whose one-line help is also the description its own --help shows."""
    return commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def _version() -> str:
    try:
        return metadata.version("pollybot-leads")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return __version__


async def run_recount(args: argparse.Namespace, mongo: Mongo) -> dict[str, Any]:
    accounts, leads = AccountRepository(mongo), LeadRepository(mongo)
    if await accounts.chatbot_workspace(chatbot_id=args.chatbot) is None:
        raise NotFound(f"No chatbot {args.chatbot}")
    counts = await leads.recount(chatbot_id=args.chatbot)
    return {"chatbotId": args.chatbot, "leadCounts": counts}


async def with_mongo(
    settings: Settings, action: Callable[[Mongo], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    mongo = Mongo.from_settings(settings)
    try:
        await mongo.connect()
        await ensure_all_indexes(mongo, settings)
        return await action(mongo)
    finally:
        await mongo.close()


async def with_accounts(
    settings: Settings, action: Callable[[AccountRepository], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    return await with_mongo(settings, lambda mongo: action(AccountRepository(mongo)))


@contextlib.contextmanager
def store_for(settings: Settings, *, owner: bool) -> Iterator[Settings]:
    """Settings pointing at a reachable store: the configured one, or the embedded one.

    ``owner`` (serve) starts the embedded server and stops it on exit; an admin command
    uses the running one when `serve` has it up, else starts one just for itself.
    """
    if not settings.embedded:
        yield settings
        return
    store = EmbeddedStore(
        settings.embedded_data_dir, settings.embedded_port, cache_size=settings.embedded_cache_size
    )
    with_uri = settings.replace(mongodb_uri=store.uri)
    if not owner and port_open(store.host, store.port) and store.running_elsewhere():
        yield with_uri
        return
    store.start()
    if owner:
        store.watch()  # restarts it should it deadlock (store/embedded.py)
    try:
        yield with_uri
    finally:
        store.stop()


def _cursor_secret(settings: Settings) -> Settings:
    """Embedded mode keeps a cursor secret under the data directory (owner-only)."""
    if settings.cursor_secret or not settings.embedded:
        return settings
    path = settings.embedded_data_dir / CURSOR_SECRET_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32))
    return settings.replace(cursor_secret=path.read_text().strip())


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


async def ensure_demo(settings: Settings) -> dict[str, Any] | None:
    """On a first start with an empty store: a demo workspace, chatbot and key."""
    path = settings.embedded_data_dir / DEMO_FILE

    async def create(accounts: AccountRepository) -> dict[str, Any]:
        if await accounts.count_workspaces() > 0:
            return {}
        workspace = await accounts.create_workspace(name="Demo workspace")
        chatbot = await accounts.create_chatbot(workspace_id=workspace["id"], name="Demo chatbot")
        issued = await accounts.create_key(workspace_id=workspace["id"], name="demo")
        demo = {
            "workspaceId": workspace["id"],
            "chatbotId": chatbot["id"],
            "keyId": issued.record.id,
            "key": issued.secret,
        }
        _write_private(path, json.dumps(demo, indent=2) + "\n")
        return demo

    demo = await with_accounts(settings, create)
    if demo:
        return demo
    if path.exists():
        saved: dict[str, Any] = json.loads(path.read_text())
        return saved
    return None


def _banner(
    settings: Settings, host: str, port: int, demo: dict[str, Any] | None, workers: int = 1
) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    base = f"http://{shown}:{port}"
    lines = [
        f"PollyBot Leads is serving on {base}",
        f"  API docs:   {base}/api/docs   (OpenAPI: {base}/api/docs/openapi.json)",
        f"  Store:      {'embedded SecantusDB, data in ' + str(settings.embedded_data_dir) if settings.embedded else 'MongoDB from MONGODB_URI'}",  # noqa: E501
        f"  Rate limit: {'Redis (REDIS_URL)' if settings.redis_url else 'in-process bucket'}",
        f"  Workers:    {workers} process{'es' if workers > 1 else ''}"
        f"   (health: {base}/healthz, {base}/readyz; metrics: {base}/metrics)",
    ]
    if demo:
        leads = f"{base}/api/v1/chatbots/{demo['chatbotId']}/leads"
        lines += [
            "",
            f"Demo credentials (kept in {settings.embedded_data_dir / DEMO_FILE}, owner-only):",
            f"  chatbot {demo['chatbotId']}  key {demo['key']}",
            "",
            "Try it:",
            f"  curl -s -X POST {leads} \\",
            f"    -H 'Authorization: Bearer {demo['key']}' \\",
            "    -H 'Content-Type: application/json' \\",
            """    -d '{"name": "John Doe", "email": "john.doe@example.com"}'""",
            f"  curl -s {leads} -H 'Authorization: Bearer {demo['key']}'",
        ]
    lines.append("\nStop with Ctrl-C.")
    return "\n".join(lines)


def serve(settings: Settings, host: str, port: int, workers: int = 1) -> int:
    """Serve until SIGTERM or Ctrl-C, then drain; the exit code."""
    settings = _cursor_secret(settings)
    if port_open(_local(host), port):  # before the store starts, not a traceback after
        print(_port_taken(host, port), file=sys.stderr)
        return 1
    if workers > 1:
        if not settings.cursor_secret:  # one secret for all workers, or cursors break
            log.warning("CURSOR_SECRET is not set: list cursors work until this server stops")
            settings = settings.replace(cursor_secret=secrets.token_urlsafe(32))
        if not settings.redis_url:
            log.warning(
                "REDIS_URL is not set: each of the %d workers keeps its own rate-limit "
                "buckets, so a key may get up to %d times its limit",
                workers,
                workers,
            )
    with store_for(settings, owner=True) as ready:
        demo = asyncio.run(ensure_demo(ready)) if settings.embedded else None
        banner = _banner(settings, host, port, demo, workers)

        def announce() -> None:
            print(banner, flush=True)

        if workers > 1:
            return run_workers(create_app, ready, host, port, workers, on_ready=announce)
        app = create_app(ready)
        run(
            serve_app(
                app, host=host, port=port, drain_seconds=ready.drain_seconds, on_ready=announce
            )
        )
        return 0


def _port_taken(host: str, port: int) -> str:
    return (
        f"error: something is already listening on {host}:{port}. Stop it, or serve on "
        f"another port: PORT={port + 1} make run (or: serve --port {port + 1})"
    )


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host  # noqa: S104


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            return serve(
                settings,
                args.host or settings.host,
                args.port or settings.port,
                args.workers or settings.workers,
            )
        if args.command == "worker":
            with store_for(settings, owner=False) as ready:
                asyncio.run(
                    webhook_admin.run_worker(
                        ready, on_ready=lambda: print("Delivering webhooks", flush=True)
                    )
                )
            return 0
        with store_for(settings, owner=False) as ready:
            if args.admin_command in webhook_admin.COMMANDS:
                result = asyncio.run(
                    with_mongo(
                        ready, lambda mongo: webhook_admin.run_webhook_command(args, mongo, ready)
                    )
                )
            elif args.admin_command in backup.COMMANDS:
                result = asyncio.run(backup.run_backup_command(args, ready))
            elif args.admin_command == "recount":
                result = asyncio.run(with_mongo(ready, lambda mongo: run_recount(args, mongo)))
            else:
                result = asyncio.run(
                    with_mongo(
                        ready,
                        lambda mongo: account_admin.run_account_command(
                            args,
                            account_admin.service_for(mongo, grace_seconds=grace_seconds(ready)),
                        ),
                    )
                )
    except AppError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        return 1
    except EmbeddedStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
