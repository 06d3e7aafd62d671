"""The soak's floor: every route of scripts/soak.py's mix with the least store work for it.

Served by ``bench_floor_server.py --soak`` for ``soak.py --floor``: the API's paths, status
codes and the parts of its answers the soak client reads (lead ids, ETag, the list's
``total`` and ``nextCursor``), on the API's own PyMongo client (``Mongo.from_settings``:
pool size, write concern, timeouts) and database. Nothing else: no authentication
(Authorization and Idempotency-Key headers are ignored), rate limit, idempotency record,
transaction, lead counter, event, audit record or webhook. It is a lower bound on the
store work of the mix, not a server anyone should run.

The store work of each route (SecantusDB 0.7.0b3; docs/load.md, "The floor"):

- GET: ``find_one`` by ``_id`` alone (the API's form, quirks.id_lookup_alone), the chatbot
  checked here.
- create: one ``insert_one``, journaled. The counters do not move, so list totals drift
  from the leads: soak.py --floor skips its totals check.
- upsert (``?upsert=email``): ``find_one`` of the chatbot's newest lead with the email (the
  by_email index), then ``update_one`` of it or ``insert_one``. Not ``find_one_and_update``:
  SecantusDB answers findAndModify with a collection scan, ~200 ms a call at 8,000 leads.
- list: the API's own reads (leads/listing.py: the same finds, windows and counts on the
  same indexes, the store's quirks detected as the API detects them), so the total is a
  read of the lead counters where the API reads them (no filter, status) and a count
  where it counts (search, metadata). Only the parameters the soak sends are parsed.
- PUT: one ``update_one`` on ``{_id, chatbotId}``, with ``updatedAt`` too under If-Match (on
  a miss one read tells 404 from 412). The ETag is the lead's ``updatedAt``, a version (the
  API hashes the whole lead), and the answer is the id and ``updatedAt`` (the whole lead
  would cost a read).
- DELETE: one ``delete_one`` on ``{_id, chatbotId}``.

Each request's store calls share the API's budget (``mongodb.timeout_ms``); a write's may
run on for the API's grace after its 503, as the API lets them (http/deadline.py).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pymongo
from aiohttp import web
from pymongo.errors import ConnectionFailure, PyMongoError

from pollybot_leads.errors import AppError
from pollybot_leads.http.deadline import HARD_CAP_SLACK_SECONDS, WRITE_GRACE_SECONDS
from pollybot_leads.ids import LEAD, is_id, new_id
from pollybot_leads.leads.counters import LeadCounters
from pollybot_leads.leads.documents import LIST_PROJECTION, PUBLIC_FIELDS, build_lead_document
from pollybot_leads.leads.listing import LeadLister
from pollybot_leads.leads.queries import LeadQuery
from pollybot_leads.leads.query import CursorCodec, metadata_value_candidates
from pollybot_leads.leads.rules import fold, query_words, render_lead
from pollybot_leads.settings import Settings
from pollybot_leads.store.client import Mongo
from pollybot_leads.timeutil import format_ts, to_ms, utcnow

Handler = Callable[[web.Request], Awaitable[web.Response]]
MONGO = web.AppKey("mongo", Mongo)
LISTER = web.AppKey("lister", LeadLister)
CODEC = web.AppKey("codec", CursorCodec)
BUDGET = web.AppKey("budget", float)
WORKSPACES = web.AppKey("workspaces", dict)
NEWEST = [("createdAt", -1), ("_id", -1)]
LIST_PARAMETERS = ("limit", "page", "status", "search", "cursor")
_OVERRUNS: set[asyncio.Task[web.Response]] = set()  # writes answered 503, still running


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = {"success": True, "data": data} if status < 400 else {"success": False, "error": data}
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def refuse(status: int, code: str, **headers: str) -> web.Response:
    return reply({"code": code}, status, headers)


def lead_of(doc: dict[str, Any]) -> dict[str, Any]:
    return render_lead({"id": doc["_id"], **{f: doc[f] for f in PUBLIC_FIELDS if f in doc}})


def version(updated_at: datetime) -> str:
    """The floor's ETag: the lead's updatedAt in milliseconds (every write moves it)."""
    return f'"{int(to_ms(updated_at).timestamp() * 1000)}"'


def updated_at_of(etag: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(etag.strip().strip('"')) / 1000, UTC)
    except ValueError:
        return None


def _settled(task: asyncio.Task[web.Response]) -> None:
    _OVERRUNS.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: its client had its 503 long ago


def budgeted(write: bool) -> Callable[[Handler], Handler]:
    """The API's budget for a request's store calls: a 503 with Retry-After past it."""

    def wrap(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.Response:
            seconds = request.app[BUDGET]
            try:
                if not write:
                    with pymongo.timeout(seconds):
                        return await handler(request)
                with pymongo.timeout(seconds + WRITE_GRACE_SECONDS):
                    task = asyncio.ensure_future(handler(request))
                done, _ = await asyncio.wait({task}, timeout=seconds + HARD_CAP_SLACK_SECONDS)
                if done:
                    return task.result()
                _OVERRUNS.add(task)
                task.add_done_callback(_settled)
            except (ConnectionFailure, TimeoutError):
                pass
            except PyMongoError as exc:
                if not exc.timeout:
                    raise
            return refuse(503, "SERVICE_UNAVAILABLE", **{"Retry-After": "2"})

        return run

    return wrap


@budgeted(write=False)
async def get_lead(request: web.Request) -> web.Response:
    lead_id, chatbot_id = request.match_info["id"], request.match_info["cb"]
    doc = await request.app[MONGO].db["leads"].find_one({"_id": lead_id})
    if doc is None or doc.get("chatbotId") != chatbot_id:
        return refuse(404, "LEAD_NOT_FOUND")
    return reply(lead_of(doc), headers={"ETag": version(doc["updatedAt"])})


async def workspace_of(request: web.Request, chatbot_id: str) -> str | None:
    """The chatbot's workspace, read once (the API knows it from the key it caches)."""
    known = request.app[WORKSPACES]
    if chatbot_id not in known:
        chatbot = await request.app[MONGO].db["chatbots"].find_one({"_id": chatbot_id})
        if chatbot is None:
            return None
        known[chatbot_id] = chatbot["workspaceId"]
    workspace: str = known[chatbot_id]
    return workspace


def changes_of(fields: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An update's $set (and $unset): top-level metadata keys merged, as a PUT merges."""
    sets: dict[str, Any] = {"updatedAt": now}
    unsets: dict[str, str] = {}
    for name in ("name", "email", "phone", "source", "status"):
        if name in fields:
            sets[name] = fields[name]
    for key, value in (fields.get("metadata") or {}).items():
        if value is None:
            unsets[f"metadata.{key}"] = ""
        else:
            sets[f"metadata.{key}"] = value
    return {"$set": sets, **({"$unset": unsets} if unsets else {})}


@budgeted(write=True)
async def create_lead(request: web.Request) -> web.Response:
    chatbot_id = request.match_info["cb"]
    upsert = request.query.get("upsert") == "email"
    try:
        fields = await request.json()
    except ValueError:
        return refuse(400, "INVALID_JSON")
    if not (
        isinstance(fields, dict) and all(isinstance(fields.get(f), str) for f in ("name", "email"))
    ):
        return refuse(400, "VALIDATION_ERROR")
    workspace = await workspace_of(request, chatbot_id)
    if workspace is None:
        return refuse(404, "CHATBOT_NOT_FOUND")
    leads, now = request.app[MONGO].db["leads"], utcnow()
    if upsert:
        found = await leads.find_one(
            {"chatbotId": chatbot_id, "emailFolded": fold(fields["email"])}, sort=NEWEST
        )
        if found is not None:
            update = changes_of(fields, now)
            await leads.update_one({"_id": found["_id"]}, update)
            found |= {k: v for k, v in update["$set"].items() if not k.startswith("metadata.")}
            found["metadata"] = {**(found.get("metadata") or {}), **(fields.get("metadata") or {})}
            return reply(lead_of(found), headers={"ETag": version(now)})
    doc = {"_id": new_id(LEAD), **build_lead_document(chatbot_id, workspace, fields, now)}
    await leads.insert_one(doc)
    headers = {"ETag": version(now), "Location": f"{request.path}/{doc['_id']}"}
    return reply(lead_of(doc), 201, headers)


@budgeted(write=True)
async def update_lead(request: web.Request) -> web.Response:
    lead_id, chatbot_id = request.match_info["id"], request.match_info["cb"]
    try:
        fields = await request.json()
    except ValueError:
        return refuse(400, "INVALID_JSON")
    if not isinstance(fields, dict) or not fields:
        return refuse(400, "VALIDATION_ERROR")
    leads, now = request.app[MONGO].db["leads"], utcnow()
    where: dict[str, Any] = {"_id": lead_id, "chatbotId": chatbot_id}
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        where["updatedAt"] = updated_at_of(if_match)
    done = await leads.update_one(where, changes_of(fields, now))
    if not done.matched_count:
        if if_match is None or not is_id(LEAD, lead_id):
            return refuse(404, "LEAD_NOT_FOUND")
        doc = await leads.find_one({"_id": lead_id})  # only on a miss: which one
        if doc is None or doc.get("chatbotId") != chatbot_id:
            return refuse(404, "LEAD_NOT_FOUND")
        return refuse(412, "PRECONDITION_FAILED")
    return reply({"id": lead_id, "updatedAt": format_ts(now)}, headers={"ETag": version(now)})


@budgeted(write=True)
async def delete_lead(request: web.Request) -> web.Response:
    if request.query.get("confirm") != "true":
        return refuse(400, "CONFIRMATION_REQUIRED")
    lead_id, chatbot_id = request.match_info["id"], request.match_info["cb"]
    done = (
        await request.app[MONGO].db["leads"].delete_one({"_id": lead_id, "chatbotId": chatbot_id})
    )
    if not done.deleted_count:
        return refuse(404, "LEAD_NOT_FOUND")
    return reply({"id": lead_id, "deletedAt": format_ts(utcnow())})


def list_query(request: web.Request) -> LeadQuery:
    """The list parameters the soak sends, unvalidated; anything else is refused."""
    q, codec = request.query, request.app[CODEC]
    metadata = tuple(
        (name.removeprefix("metadata."), metadata_value_candidates(value))
        for name, value in q.items()
        if name.startswith("metadata.")
    )
    unknown = [n for n in q if n not in LIST_PARAMETERS and not n.startswith("metadata.")]
    if unknown:
        raise ValueError(f"the floor does not take {unknown}")
    return LeadQuery(
        statuses=tuple(q["status"].split(",")) if "status" in q else (),
        words=tuple(query_words(q["search"])) if "search" in q else (),
        metadata=metadata,
        page=int(q.get("page", "1")),
        limit=min(max(int(q.get("limit", "10")), 1), 100),
        after=codec.decode(q["cursor"]) if "cursor" in q else None,
    )


@budgeted(write=False)
async def list_leads(request: web.Request) -> web.Response:
    try:
        query = list_query(request)
    except (ValueError, AppError):
        return refuse(400, "VALIDATION_ERROR")
    page = await request.app[LISTER].list(request.match_info["cb"], query)
    cursor = None
    if page.has_next and page.last_position:
        cursor = request.app[CODEC].encode(page.last_position)
    pagination = {
        "page": query.page if query.after is None else None,
        "limit": query.limit,
        "total": page.total,
        "totalPages": -(-page.total // query.limit),
        "hasNext": page.has_next,
        "hasPrev": query.page > 1 or query.after is not None,
        "nextCursor": cursor,
    }
    return reply({"leads": [lead_of(doc) for doc in page.leads], "pagination": pagination})


def create_soak_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[WORKSPACES] = {}
    app[BUDGET] = settings.mongodb_timeout_ms / 1000
    app[CODEC] = CursorCodec(secrets.token_bytes(32))

    async def store(app: web.Application) -> Any:
        mongo = Mongo.from_settings(settings)  # the API's client and its options
        quirks = await mongo.connect()  # and the store's quirks, as the API learns them
        app[MONGO] = mongo
        counters = LeadCounters(mongo.db["lead_counts"])
        app[LISTER] = LeadLister(
            mongo.db["leads"], LIST_PROJECTION, counts=counters.read, quirks=quirks
        )
        yield
        await mongo.close()

    app.cleanup_ctx.append(store)
    base = "/api/v1/chatbots/{cb}/leads"
    app.router.add_get(base, list_leads)
    app.router.add_post(base, create_lead)
    app.router.add_get(base + "/{id}", get_lead)
    app.router.add_put(base + "/{id}", update_lead)
    app.router.add_delete(base + "/{id}", delete_lead)
    return app
