from pymongo import ASCENDING, IndexModel

from pollybot_leads.storage.indexes import LEAD_INDEXES, ensure_indexes


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
