"""GroupCommit: a waiter that gives up while its batch is written leaves nothing behind."""

import asyncio
import gc
from typing import Any

from pollybot_leads.storage.batching import GroupCommit, KeyedLocks


async def test_a_waiter_cancelled_during_its_batch_leaves_no_unread_failure() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    batches: list[list[int]] = []
    second_batch = asyncio.Event()

    async def write(key: str, items: list[int]) -> list[int | Exception]:
        batches.append(items)
        if len(batches) == 2:
            second_batch.set()
        await asyncio.sleep(0.05)
        if len(batches) == 2:
            raise RuntimeError("the store failed the batch")
        return items

    try:
        commit: GroupCommit[int, int] = GroupCommit(KeyedLocks(), write)
        first = asyncio.ensure_future(commit.submit("cb", 1))
        await asyncio.sleep(0.01)  # the first batch is being written
        writer = asyncio.ensure_future(commit.submit("cb", 2))
        waiter = asyncio.ensure_future(commit.submit("cb", 3))  # both wait for the next batch
        await second_batch.wait()
        waiter.cancel()  # gives up while its item is being written
        results = await asyncio.gather(first, writer, waiter, return_exceptions=True)
        assert batches == [[1], [2, 3]]
        assert results[0] == 1
        assert isinstance(results[1], RuntimeError)
        assert isinstance(results[2], asyncio.CancelledError)
        await asyncio.sleep(0)  # done callbacks run
        del results, first, writer, waiter, commit  # a failure's traceback holds its batch
        gc.collect()  # an unread failure is reported when its future is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    # Only this test's own failure counts (a collection may report another test's leftovers).
    ours = [c for c in reported if "store failed the batch" in str(c.get("exception"))]
    assert not [c for c in ours if "never retrieved" in c.get("message", "")], reported
