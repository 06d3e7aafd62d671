"""One document by ``_id``, shaped for the store: looked up within a scope (a tenant), or
a number in it incremented and read back.

Plain MongoDB answers ``{_id, chatbotId}`` with a point lookup on the ``_id`` index and
projects on the server. Where a condition beside the ``_id`` makes the store scan the
collection (store/quirks.py, ``id_lookup_alone``), the document is looked up by ``_id``
alone; where a projection costs the store more than the whole document
(``projection_in_app``), the whole document is read. The scope is checked here in
every case, so a document outside it is never returned.
"""

from __future__ import annotations

from typing import Any

from .driver import ReturnDocument
from .quirks import StoreQuirks


async def find_in_scope(
    collection: Any,
    doc_id: Any,
    scope: dict[str, Any],
    projection: dict[str, int] | None,
    quirks: StoreQuirks,
    **kw: Any,
) -> dict[str, Any] | None:
    """The document ``doc_id`` when its fields hold ``scope``, else None (one read).
    ``kw``: passed to ``find_one`` (a session)."""
    if quirks.projection_in_app:
        projection = None
    elif projection is not None:
        projection = {**projection, **dict.fromkeys(scope, 1)}  # for the scope check
    filter_ = {"_id": doc_id} if quirks.id_lookup_alone else {"_id": doc_id, **scope}
    doc: dict[str, Any] | None = await collection.find_one(filter_, projection, **kw)
    if doc is None or any(doc.get(field) != value for field, value in scope.items()):
        return None
    return doc


async def increment(
    collection: Any, doc_id: Any, field: str, by: int, quirks: StoreQuirks, session: Any
) -> int:
    """Add ``by`` to ``field`` of the document ``doc_id`` (made if missing) and return the
    new value, in ``session``'s transaction. One ``findAndModify``, or, where that scans
    the collection (``find_and_modify_scans``), the update then the read: the
    transaction holds the document from its update, so the read sees that update and no
    other."""
    change = {"$inc": {field: by}}
    found: dict[str, Any] | None
    if quirks.find_and_modify_scans:
        await collection.update_one({"_id": doc_id}, change, upsert=True, session=session)
        found = await collection.find_one({"_id": doc_id}, session=session)
    else:
        found = await collection.find_one_and_update(
            {"_id": doc_id},
            change,
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
    assert found is not None  # made by the upsert
    value: int = found[field]
    return value
