from pymongo import ASCENDING, IndexModel

from pollybot_leads.indexes import ensure_all_indexes as ensure_indexes
from pollybot_leads.leads.indexes import LEAD_INDEXES
from pollybot_leads.webhooks.repository import WEBHOOK_RETIRED_INDEXES as RETIRED_INDEXES


async def test_ensure_indexes_is_idempotent_and_rebuilds_changed_ones(mongo):
    await ensure_indexes(mongo)
    leads = mongo.db["leads"]
    await leads.drop_index("by_email")
    await leads.create_indexes(
        [IndexModel([("chatbotId", ASCENDING), ("email", ASCENDING)], name="by_email")]
    )  # an older definition
    await ensure_indexes(mongo)
    await ensure_indexes(mongo)
    info = await leads.index_information()
    for model in LEAD_INDEXES:
        doc = model.document
        assert [tuple(k) for k in info[doc["name"]]["key"]] == list(doc["key"].items())


async def test_indexes_no_query_uses_any_more_are_dropped(mongo):
    """A database an earlier version indexed loses the indexes it no longer reads by."""
    deliveries = mongo.db["webhook_deliveries"]
    await deliveries.create_indexes(
        [IndexModel([("state", ASCENDING), ("dueAt", ASCENDING)], name="due")]
    )  # as the first webhook version made it
    await ensure_indexes(mongo)
    await ensure_indexes(mongo)  # nothing left to drop: no error either
    for collection, names in RETIRED_INDEXES.items():
        assert not set(names) & set(await mongo.db[collection].index_information())
    assert "by_webhook" in await deliveries.index_information()
