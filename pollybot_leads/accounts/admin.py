"""`pollybot-leads admin …` commands for workspaces, chatbots and API keys.

Each prints one JSON object; a key's secret is shown only when it is issued.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..http.context import ApiKeyRecord
from ..timeutil import format_ts
from .repository import AccountRepository


def key_json(key: ApiKeyRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": key.id,
        "workspaceId": key.workspace_id,
        "name": key.name,
        "createdAt": format_ts(key.created_at),
        "revoked": key.revoked_at is not None,
        "scopes": sorted(key.scopes),
        "chatbotIds": None if key.chatbot_ids is None else sorted(key.chatbot_ids),
        "expiresAt": None if key.expires_at is None else format_ts(key.expires_at),
    }
    if key.rate_limit_capacity is not None or key.rate_limit_refill is not None:
        out["rateLimit"] = {
            "capacity": key.rate_limit_capacity,
            "refillPerSecond": key.rate_limit_refill,
        }
    return out


async def run_account_command(
    args: argparse.Namespace, accounts: AccountRepository
) -> dict[str, Any]:
    command = args.admin_command
    if command == "create-workspace":
        return await accounts.create_workspace(name=args.name)
    if command == "create-chatbot":
        return await accounts.create_chatbot(workspace_id=args.workspace, name=args.name)
    if command == "create-key":
        issued = await accounts.create_key(
            workspace_id=args.workspace,
            name=args.name,
            rate_limit_capacity=args.rate_limit_capacity,
            rate_limit_refill=args.rate_limit_refill,
            scopes=args.scopes,
            chatbot_ids=args.chatbots,
            expires_at=args.expires_at,
        )
        return {**key_json(issued.record), "key": issued.secret}
    if command == "revoke-key":
        return key_json(await accounts.revoke_key(key_id=args.key_id))
    if command == "list-keys":
        keys = await accounts.list_keys(workspace_id=args.workspace)
        return {"workspaceId": args.workspace, "keys": [key_json(k) for k in keys]}
    if command == "set-rate-limit":
        return key_json(
            await accounts.set_rate_limit(
                key_id=args.key_id, capacity=args.capacity, refill_per_second=args.refill
            )
        )
    raise AssertionError(command)
