"""Mongo.primary_known: which requests may skip the deadline middleware's task and hard
cap (a store call that must first look for its server could overrun the budget)."""

from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import free_port


async def test_a_connected_pymongo_client_knows_where_to_write(mongo: Mongo) -> None:
    """The test store (a replica set member, or the embedded store by direct connection)
    is known once connected; motor's calls run outside the request's timeout, never."""
    await mongo.ping()
    assert mongo.primary_known() is (mongo.driver == "pymongo")


async def test_a_client_that_never_reached_its_store_does_not() -> None:
    uri = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true&retryWrites=false"
    unreached = Mongo(uri, "nowhere")
    try:
        assert not unreached.primary_known()
    finally:
        await unreached.close()
