"""Every workaround for a MongoDB-wire server's quirks, in one place.

The service runs on MongoDB (``mongod``) and on SecantusDB, the embedded default. Where
SecantusDB 0.7 answers a plain query shape with a whole-collection scan, or answers it
wrongly, the store package shapes the query differently instead. Each quirk says
what it works around, the version it was found on, and what plain MongoDB does; against
``mongod`` every flag is off and the plain forms run. ``tests/storage/test_quirks.py``
shows that each quirk is still there, so a flag can be dropped the day it is not.

Detected once at start-up from ``buildInfo`` (SecantusDB reports ``secantusVersion``).
The query shapes the flags choose live beside this module: store/plans.py (lists and
exports), store/paging.py, store/walks.py and store/lookups.py; no feature tests a flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreQuirks:
    """What the connected server needs worked around. All False: plain MongoDB."""

    # Name and version of the server, for logs and the benchmark reports.
    server: str = "mongod"

    # SecantusDB 0.7.0b3: a filter that adds any condition to an ``_id`` equality
    # (``{_id, chatbotId}``) is a whole-collection scan (~3x the cost of ``{_id}`` alone at
    # 5k leads, growing with the collection). Workaround: look single documents up by
    # ``_id`` alone and check the tenant (and any guard) in the application, inside the
    # write's transaction. MongoDB: ``{_id, chatbotId}`` is an ``_id`` index point lookup.
    id_lookup_alone: bool = False

    # SecantusDB 0.7.0b3: a find is an index scan only when every filter field belongs to
    # one index, with at most one ``$in``, never ``$in`` beside a range, and no ``$and``,
    # ``$or``, ``$all`` or ``$elemMatch``; anything else (and any ``hint``, which scans
    # the whole index) reads the whole collection, every tenant's leads. Workaround: split
    # ``$in`` lists into equality reads merged in the application, and check conditions
    # outside the chosen index on this chatbot's candidates in the application.
    # MongoDB: one query with ``$in``, ``$all`` and residual conditions, index-bounded.
    index_only_filters: bool = False

    # SecantusDB 0.7.0b3: an inclusive bound at the far end of a descending index range
    # drops the keys equal to it. Workaround: millisecond-precision times are sent as exclusive
    # bounds one millisecond further out (the same leads). MongoDB: inclusive bounds.
    exclusive_time_bounds: bool = False

    # SecantusDB 0.7.0b3: a projection costs the server more than sending the whole
    # document (find_one by _id, 16 concurrent: ~1,450/s without, ~750/s with an
    # inclusion projection). Workaround: read whole leads; the repository keeps only the
    # public fields. MongoDB: project on the server (less to send and decode).
    projection_in_app: bool = False

    # SecantusDB 0.7.0b3 reads every key of a find's index range before it applies
    # ``limit`` (500 of 5,000 pending events returned, all 5,000 examined, 85 ms; a
    # chatbot's first lead by name, limit 1: all its 5,000 keys examined). Workaround:
    # reads whose own range bounds the scan (store/windows.py). Newest-first lead lists
    # (store/paging.py), exports (store/walks.py) and the webhook dispatcher's pending
    # events and due deliveries (webhooks/pending.py, due.py) read in windows on
    # every store (the same plain query on MongoDB); with this flag the lists sorted
    # oldest first or by name read in windows too, starting at the chatbot's first
    # creation time or its lowest/highest name, kept beside its lead counters. MongoDB:
    # the limit stops the scan, and those lists are one plain sort + limit.
    limit_reads_whole_range: bool = False

    # SecantusDB 0.7.0b3 answers ``findAndModify`` by ``_id`` with a whole-collection
    # scan (explain says IXSCAN; the time says otherwise): 125 ms a call at 20,000
    # documents against 1.3 ms for ``update_one`` then ``find_one`` by ``_id``. The event
    # sequence (one document per chatbot) is taken in every lead write's transaction.
    # Workaround: the update, then the read, in the same transaction (store/lookups.py,
    # ``increment``). MongoDB: findAndModify is one point lookup and one round trip.
    find_and_modify_scans: bool = False

    # Not a flag (nothing to detect from a client): SecantusDB 0.7.0b3 does not journal
    # a transaction's commit even with writeConcern j: true (single writes it does);
    # measured: 2 of 571 and 18 of 422 acknowledged commits lost to a SIGKILL. The
    # embedded store therefore runs with ``--sync-on-commit`` (store/embedded.py),
    # which costs 7-25 % of commits per second; run an external SecantusDB with it too.
    # MongoDB: j: true holds for commits.

    # Not a flag either (no form depends on it): SecantusDB 0.7.0b3 accepts a snapshot
    # session (read concern ``snapshot`` outside a transaction) and answers it with an
    # ``atClusterTime``, but does not pin its reads; a transaction's reads it does pin.
    # So reads of one moment (``admin dump``) run in a read-only transaction on every
    # store (store/snapshots.py; tests/storage/test_snapshots.py shows the quirk).
    # MongoDB: both pin (a snapshot session for minSnapshotHistoryWindowInSeconds).

    @property
    def any(self) -> bool:
        return any(
            (
                self.id_lookup_alone,
                self.index_only_filters,
                self.exclusive_time_bounds,
                self.projection_in_app,
                self.limit_reads_whole_range,
                self.find_and_modify_scans,
            )
        )


PLAIN = StoreQuirks()
SECANTUS_0_7 = StoreQuirks(
    server="secantusdb 0.7",
    id_lookup_alone=True,
    index_only_filters=True,
    exclusive_time_bounds=True,
    projection_in_app=True,
    limit_reads_whole_range=True,
    find_and_modify_scans=True,
)


def quirks_for(build_info: dict[str, Any]) -> StoreQuirks:
    """The quirks of the server that answered ``buildInfo`` with ``build_info``."""
    secantus = build_info.get("secantusVersion")
    if secantus:
        # Found on 0.7.0b3; assumed of every 0.7.x until a test shows otherwise.
        return replace(SECANTUS_0_7, server=f"secantusdb {secantus}")
    return replace(PLAIN, server=f"mongod {build_info.get('version', '?')}")


async def detect(db: Any) -> StoreQuirks:
    quirks = quirks_for(await db.command("buildInfo"))
    if quirks.any:
        log.debug("store is %s: its query-shape workarounds are on", quirks.server)
    return quirks
