"""`pollybot-leads admin …-webhook…` commands and `pollybot-leads worker`.

The admin commands do what the /api/v1/webhooks API does, for an operator: an endpoint
is named by its id alone (its workspace is looked up), and each prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from ..errors import ConfirmationRequired, ValidationFailed
from ..indexes import retention_expiries
from ..leads.event_log import EVENT_INDEXES
from ..settings import Settings
from ..store.client import Mongo
from ..store.indexes import ensure_indexes
from ..timeutil import format_ts, utcnow
from .delivery import running_worker
from .payload import EVENT_TYPES
from .repository import WEBHOOK_INDEXES, WEBHOOK_RETIRED_INDEXES, WebhookRepository
from .routes import attempt_json, webhook_json
from .targets import target_problem

COMMANDS = (
    "create-webhook",
    "list-webhooks",
    "get-webhook",
    "update-webhook",
    "delete-webhook",
    "rotate-webhook-secret",
    "webhook-deliveries",
    "replay-webhook",
)

Command = Callable[[str, str], argparse.ArgumentParser]


def add_commands(command: Command) -> None:
    """Add the webhook admin commands through cli.py's ``command(name, help)``."""
    webhook_help = "the endpoint's id (wh_…)"
    p = command("create-webhook", "create a webhook endpoint; its secret is shown only now")
    p.add_argument("--workspace", required=True, help="the workspace's id (ws_…)")
    p.add_argument("--url", required=True, help="where events are POSTed (https://…)")
    _subscription(p)
    p.add_argument("--description", help="a note for people")
    p = command("list-webhooks", "list a workspace's webhook endpoints")
    p.add_argument("--workspace", required=True, help="the workspace's id (ws_…)")
    p = command("get-webhook", "show a webhook endpoint")
    p.add_argument("webhook_id", help=webhook_help)
    p = command("update-webhook", "change a webhook endpoint (only the options given)")
    p.add_argument("webhook_id", help=webhook_help)
    p.add_argument("--url", help="a new URL")
    _subscription(p)
    p.add_argument("--all-chatbots", action="store_true", help="deliver every chatbot's events")
    p.add_argument("--description", help="a new note")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true", help="send deliveries (again)")
    state.add_argument("--disable", action="store_true", help="hold deliveries")
    p = command("delete-webhook", "delete a webhook endpoint, its queue and its log")
    p.add_argument("webhook_id", help=webhook_help)
    p.add_argument("--confirm", action="store_true", help="required: deletion is permanent")
    p = command("rotate-webhook-secret", "issue a new secret (the old one signs 24 h more)")
    p.add_argument("webhook_id", help=webhook_help)
    p = command("webhook-deliveries", "show an endpoint's delivery attempts, newest first")
    p.add_argument("webhook_id", help=webhook_help)
    p.add_argument("--limit", type=int, default=50, help="attempts to show (1-100)")
    p.add_argument("--before", help="continue with attempts older than this one (att_…)")
    p = command("replay-webhook", "queue an endpoint's events after a sequence again")
    p.add_argument("webhook_id", help=webhook_help)
    p.add_argument("--after", type=int, required=True, help="the sequence to replay after")


def _subscription(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--event",
        action="append",
        choices=EVENT_TYPES,
        dest="events",
        help="an event type to deliver (repeat it; default: all)",
    )
    p.add_argument(
        "--chatbot",
        action="append",
        dest="chatbots",
        help="deliver only this chatbot's events (repeat it; default: every chatbot)",
    )


async def run_webhook_command(
    args: argparse.Namespace, mongo: Mongo, settings: Settings
) -> dict[str, Any]:
    repo = WebhookRepository(mongo)
    command = args.admin_command
    if command == "create-webhook":
        await _check_url(args.url, settings)
        endpoint, secret = await repo.create(
            workspace_id=args.workspace,
            url=args.url,
            events=list(dict.fromkeys(args.events or EVENT_TYPES)),
            chatbot_ids=list(dict.fromkeys(args.chatbots or [])),
            description=args.description,
            limit=settings.webhook_max_endpoints,
        )
        return webhook_json(endpoint, secret)
    if command == "list-webhooks":
        return {
            "workspaceId": args.workspace,
            "webhooks": [webhook_json(e) for e in await repo.list(workspace_id=args.workspace)],
        }
    workspace = await repo.workspace_of(webhook_id=args.webhook_id)
    named = {"workspace_id": workspace, "webhook_id": args.webhook_id}
    if command == "get-webhook":
        return webhook_json(await repo.get(**named))
    if command == "update-webhook":
        changes: dict[str, Any] = {}
        if args.url is not None:
            await _check_url(args.url, settings)
            changes["url"] = args.url
        if args.events:
            changes["events"] = list(dict.fromkeys(args.events))
        if args.chatbots or args.all_chatbots:
            changes["chatbotIds"] = [] if args.all_chatbots else list(dict.fromkeys(args.chatbots))
        if args.description is not None:
            changes["description"] = args.description
        if args.enable or args.disable:
            changes["enabled"] = bool(args.enable)
        if not changes:
            raise ValidationFailed("Nothing to change: give at least one option")
        return webhook_json(await repo.update(**named, changes=changes))
    if command == "delete-webhook":
        if not args.confirm:
            raise ConfirmationRequired("Deletion is permanent: add --confirm")
        await repo.delete(**named)
        return {"id": args.webhook_id, "deletedAt": format_ts(utcnow()), "deleted": True}
    if command == "rotate-webhook-secret":
        endpoint, secret = await repo.rotate_secret(**named)
        return webhook_json(endpoint, secret)
    if command == "webhook-deliveries":
        if not 1 <= args.limit <= 100:
            raise ValidationFailed("--limit must be 1-100")
        found, more = await repo.attempts(**named, before=args.before, limit=args.limit)
        return {
            "webhookId": args.webhook_id,
            "deliveries": [attempt_json(a) for a in found],
            "nextBefore": found[-1]["_id"] if more else None,
        }
    if command == "replay-webhook":
        if args.after < 0:
            raise ValidationFailed("--after must be 0 or more")
        chatbots = await repo.request_replay(**named, after=args.after)
        return {"webhookId": args.webhook_id, "after": args.after, "chatbotIds": chatbots}
    raise AssertionError(command)


async def _check_url(url: str, settings: Settings) -> None:
    problem = await target_problem(
        url, allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
    )
    if problem:
        raise ValidationFailed(f"url: {problem}")


async def run_worker(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Deliver webhooks until SIGTERM or SIGINT (`pollybot-leads worker`)."""
    mongo = Mongo.from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await mongo.connect()
        await ensure_indexes(
            mongo,
            EVENT_INDEXES,
            WEBHOOK_INDEXES,
            retired=[WEBHOOK_RETIRED_INDEXES],
            expiries=retention_expiries(settings),
        )
        async with mongo.sessions.kept(), running_worker(mongo, settings):
            if on_ready:
                on_ready()
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        await mongo.close()
