"""Looking one document up by ``_id`` within a scope (a tenant), shaped for the store.

Plain MongoDB answers ``{_id, chatbotId}`` with a point lookup on the ``_id`` index and
projects on the server. Where a condition beside the ``_id`` makes the store scan the
collection (store/quirks.py, ``id_lookup_alone``), the document is looked up by ``_id``
alone; where a projection costs the store more than the whole document
(``projection_in_app``), the whole document is read. The scope is checked here in
every case, so a document outside it is never returned.
"""

from __future__ import annotations

from typing import Any

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
