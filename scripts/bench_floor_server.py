"""The floor for `make bench-http` and `soak.py --floor`: store work, nothing around it.

aiohttp's bare router and PyMongo's AsyncMongoClient doing the API's reads and writes,
with no authentication, rate limit, middleware, validation or access log: what the API
spends beyond this server is what everything around the store work costs.

Two route sets. By default, get, create and list page 1 for scripts/bench_http.py (a
create is the API's transaction: the lead and its counter). With ``--soak``, every route
the soak mix calls (get, create, upsert, list, PUT, DELETE) with the *least* store work
for each, a lower bound (scripts/floor_soak.py says what each does), on the API's own
client options and request budget. Started by the benchmarks:

    MONGODB_URI=mongodb://... MONGODB_DATABASE=... python scripts/bench_floor_server.py --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pymongo import AsyncMongoClient, WriteConcern

from pollybot_leads.leads.documents import build_lead_document

# Whole documents are read, as the API does on SecantusDB (a projection halves its rate:
# pollybot_leads/store/quirks.py), and the public fields kept here.
PUBLIC = ("chatbotId", "workspaceId", "name", "email", "phone", "source", "status")
PUBLIC += ("metadata", "statusHistory", "createdAt", "updatedAt")
REQUIRED = ("name", "email")
DB = web.AppKey("db", Any)
CONCERN = web.AppKey("concern", WriteConcern)
WORKSPACES = web.AppKey("workspaces", dict)


def _iso(value: Any) -> str:
    """json.dumps default: BSON dates as the API renders them (UTC, milliseconds, Z)."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _reply(data: Any, status: int = 200, **headers: str) -> web.Response:
    body = {"success": True, "data": data} if status < 400 else {"success": False, "error": data}
    text = json.dumps(body, default=_iso)
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def _lead(doc: dict) -> dict:
    return {"id": doc["_id"], **{field: doc[field] for field in PUBLIC if field in doc}}


async def get_lead(request: web.Request) -> web.Response:
    doc = await request.app[DB]["leads"].find_one({"_id": request.match_info["id"]})
    if doc is None or doc["chatbotId"] != request.match_info["cb"]:
        return _reply({"code": "NOT_FOUND"}, 404)
    return _reply(_lead(doc))


async def create_lead(request: web.Request) -> web.Response:
    chatbot_id, workspaces = request.match_info["cb"], request.app[WORKSPACES]
    try:
        fields = await request.json()
    except ValueError:
        return _reply({"code": "INVALID_JSON"}, 400)
    if not isinstance(fields, dict) or not all(isinstance(fields.get(f), str) for f in REQUIRED):
        return _reply({"code": "VALIDATION_ERROR"}, 400)
    if chatbot_id not in workspaces:  # the API knows it from the key it caches
        chatbot = await request.app[DB]["chatbots"].find_one({"_id": chatbot_id})
        if chatbot is None:
            return _reply({"code": "CHATBOT_NOT_FOUND"}, 404)
        workspaces[chatbot_id] = chatbot["workspaceId"]
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON dates: milliseconds
    doc = build_lead_document(chatbot_id, workspaces[chatbot_id], fields, now)
    doc["_id"] = "lead_" + secrets.token_hex(8)  # the API's id format
    # The API's store work for a create: the lead and its chatbot's counter (one of 32
    # shards, as leads/counters.py) in one transaction, committed journaled. The
    # plain way, one transaction per request (the API commits concurrent creates
    # together).
    db, counter = request.app[DB], f"{chatbot_id}:{random.randrange(32):02d}"
    inc = {"total": 1, f"byStatus.{doc['status']}": 1}
    async with db.client.start_session() as session:

        async def write(session: Any) -> None:
            await db["leads"].insert_one(doc, session=session)
            await db["lead_counts"].update_one(
                {"_id": counter}, {"$inc": inc}, upsert=True, session=session
            )

        await session.with_transaction(write, write_concern=request.app[CONCERN])
    return _reply(_lead(doc), 201, Location=f"{request.path}/{doc['_id']}")


async def list_leads(request: web.Request) -> web.Response:
    chatbot_id, db = request.match_info["cb"], request.app[DB]
    try:
        limit = min(max(int(request.query.get("limit", "10")), 1), 100)
    except ValueError:
        return _reply({"code": "VALIDATION_ERROR"}, 400)
    # The total from the API's lead counters: documents <chatbotId>:<nn>, summed.
    shards = {"_id": {"$gte": f"{chatbot_id}:", "$lt": f"{chatbot_id};"}}
    total = sum([doc.get("total", 0) async for doc in db["lead_counts"].find(shards)])
    newest = [("createdAt", -1), ("_id", -1)]  # one lead more says whether a page follows
    docs = await db["leads"].find({"chatbotId": chatbot_id}, sort=newest, limit=limit + 1).to_list()
    pagination = {"page": 1, "limit": limit, "total": total, "totalPages": -(-total // limit)}
    pagination |= {"hasNext": len(docs) > limit, "hasPrev": False, "nextCursor": None}
    return _reply({"leads": [_lead(doc) for doc in docs[:limit]], "pagination": pagination})


def create_app(uri: str, database: str, journal: bool) -> web.Application:
    app = web.Application()
    app[WORKSPACES] = {}

    async def mongo(app: web.Application):
        options = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000}
        client = AsyncMongoClient(uri, tz_aware=True, appname="pollybot-floor", **options)
        app[DB] = client[database]
        # Journaled, as the API acknowledges its writes (config/default.toml [mongodb]).
        concern = WriteConcern(w=1, j=True) if journal else WriteConcern(w=1)
        app[CONCERN] = concern
        yield
        await client.close()

    app.cleanup_ctx.append(mongo)
    base = "/api/v1/chatbots/{cb}/leads"
    app.router.add_get(base, list_leads)
    app.router.add_post(base, create_lead)
    app.router.add_get(base + "/{id}", get_lead)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-journal", action="store_true", help="creates without j=true")
    parser.add_argument(
        "--soak", action="store_true", help="every route of scripts/soak.py (its --floor)"
    )
    args = parser.parse_args()
    if args.soak and args.no_journal:
        parser.error("--soak takes the write concern from the API's settings (MONGODB_JOURNAL)")
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    uri, database = os.environ["MONGODB_URI"], os.environ.get("MONGODB_DATABASE", "pollybot_leads")
    if args.soak:
        from floor_soak import create_soak_app  # beside this script, on sys.path

        from pollybot_leads.settings import load_settings

        app = create_soak_app(load_settings())  # MONGODB_URI and the rest, as the API reads them
    else:
        app = create_app(uri, database, journal=not args.no_journal)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
