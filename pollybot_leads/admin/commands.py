"""`pollybot-leads admin …` commands for workspaces, chatbots, API keys and admin keys:
thin callers of admin/service.py, the code the admin API runs, audited as the CLI's.

Each prints one JSON object; a key's secret is shown only when it is issued.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..accounts.repository import AccountRepository
from ..leads.repository import LeadRepository
from ..store.client import Mongo
from .audit import AuditTrail
from .deletion import DeletionJobs
from .service import CLI, AdminService

COMMANDS = (
    "create-workspace",
    "create-chatbot",
    "create-key",
    "revoke-key",
    "list-keys",
    "set-rate-limit",
    "create-admin-key",
    "revoke-admin-key",
)


def service_for(mongo: Mongo, *, grace_seconds: float) -> AdminService:
    return AdminService(
        AccountRepository(mongo),
        LeadRepository(mongo),
        AuditTrail(mongo),
        DeletionJobs(mongo, grace_seconds=grace_seconds),
    )


async def run_account_command(args: argparse.Namespace, service: AdminService) -> dict[str, Any]:
    command = args.admin_command
    if command == "create-workspace":
        return await service.create_workspace(CLI, name=args.name)
    if command == "create-chatbot":
        return await service.create_chatbot(
            CLI, workspace_id=args.workspace, name=args.name, default_region=args.default_region
        )
    if command == "create-key":
        shown, secret = await service.create_key(
            CLI,
            workspace_id=args.workspace,
            name=args.name,
            rate_limit_capacity=args.rate_limit_capacity,
            rate_limit_refill=args.rate_limit_refill,
            scopes=args.scopes,
            chatbot_ids=args.chatbots,
            expires_at=args.expires_at,
        )
        return {**shown, "key": secret}
    if command == "revoke-key":
        return await service.revoke_key(CLI, args.key_id)
    if command == "list-keys":
        return {"workspaceId": args.workspace, "keys": await service.keys(args.workspace)}
    if command == "set-rate-limit":
        limit = {"capacity": args.capacity, "refillPerSecond": args.refill}
        return await service.update_key(CLI, args.key_id, {"rate_limit": limit})
    if command == "create-admin-key":
        return await service.create_admin_key(name=args.name)
    if command == "revoke-admin-key":
        return await service.revoke_admin_key(args.key_id)
    raise AssertionError(command)
