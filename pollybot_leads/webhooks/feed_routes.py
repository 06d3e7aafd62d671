"""The event feed: a chatbot's lead changes in sequence order, to catch up from."""

from __future__ import annotations

from aiohttp import web

from ..errors import ValidationFailed
from ..http.body import load_query
from ..http.context import AUTH
from ..http.responses import ok
from ..http.spec import CHATBOT_ERRORS, Operation, Response
from ..leads.event_log import event_log_key
from .payload import event_json
from .schemas import EventFeedQuerySchema, EventListEnvelopeSchema

_feed_query = EventFeedQuerySchema()


@Operation(
    operation_id="listEvents",
    scope="leads:read",
    tag="events",
    summary="Read the event feed",
    description="The chatbot's lead changes (`lead.created`, `lead.updated`, "
    "`lead.deleted`) in sequence order: every committed change has exactly one event, "
    "numbered 1, 2, 3... per chatbot without gaps; events are kept 30 days (the "
    "deployment's retention may differ). A deleted lead's earlier events stay in their "
    'place with `data` reduced to `{"lead": {"id"}, "redacted": true}`. Start with '
    "`after=0` and pass each page's `pagination.nextAfter` to the next request; an empty "
    "page means you are up to date (poll again later). The events are the bodies webhook "
    "deliveries carry. Unknown, repeated or malformed parameters are a 400.",
    query=EventFeedQuerySchema,
    responses={200: Response("A page of events", EventListEnvelopeSchema)},
    errors=(ValidationFailed, *CHATBOT_ERRORS),
)
async def list_events(request: web.Request) -> web.Response:
    query = load_query(request.query, _feed_query)
    found = await request.app[event_log_key].feed(
        chatbot_id=request[AUTH].chatbot_id, after=query["after"], limit=query["limit"] + 1
    )
    page = found[: query["limit"]]
    return ok(
        {
            "events": [event_json(doc) for doc in page],
            "pagination": {
                "after": query["after"],
                "limit": query["limit"],
                "hasMore": len(found) > len(page),
                "nextAfter": page[-1]["sequence"] if page else query["after"],
            },
        }
    )


def add_event_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/chatbots/{chatbotId}/events", list_events, allow_head=False)
