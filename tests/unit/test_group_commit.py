"""GroupCommit: a waiter that gives up while its batch is written leaves nothing behind;
a slow store gets batches it can write in time."""

import asyncio
import gc
from typing import Any

import pytest

from pollybot_leads.store.client import remaining, store_deadline
from pollybot_leads.store.group_commit import GroupCommit, KeyedLocks


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


async def test_a_slow_store_gets_smaller_batches_not_a_failed_large_one() -> None:
    """Writes of 10 ms an item, each writer with a 0.5 s budget: 60 writers at once would
    make one batch of 1.2 s that times out, every outcome unknown. Batches are capped
    to what fits in half the writer's remaining budget at the pace seen so far: each
    batch commits, and a writer whose budget runs out while it waits is refused without
    being written."""
    batches: list[list[int]] = []
    failed: list[list[int]] = []

    async def write(key: str, items: list[int]) -> list[int | Exception]:
        batches.append(items)
        try:
            async with asyncio.timeout(remaining()):  # the store's own deadline
                await asyncio.sleep(0.01 * len(items))
        except TimeoutError:
            failed.append(items)
            raise
        return items

    commit: GroupCommit[int, int] = GroupCommit(KeyedLocks(), write, max_batch=200)

    async def submit(item: int) -> int:
        with store_deadline(0.5):
            return await commit.submit("cb", item)

    assert await submit(0) == 0  # the pace: 10 ms an item
    results = await asyncio.gather(*(submit(i) for i in range(1, 61)), return_exceptions=True)
    assert not failed, [len(b) for b in batches]
    written = {item for batch in batches for item in batch}
    assert all(results[i - 1] == i for i in written if i), results
    refused = [i for i in range(1, 61) if i not in written]
    assert all(isinstance(results[i - 1], TimeoutError) for i in refused)
    # Half the budget is 25 items; the line is fitted to measured times, noisy on a busy
    # machine, and a batch of 50 would take the whole budget.
    assert len(written) > 40 and max(len(b) for b in batches) <= 40


async def test_after_a_stalled_store_writes_resume_at_once() -> None:
    """A batch that ran out its whole budget (the store stalled) raises the cost, but never
    so far that a writer with a fresh budget is refused: the next write is written, and
    concurrent writers soon get batches as large as they need."""
    stalled = True
    batches: list[list[int]] = []

    async def write(key: str, items: list[int]) -> list[int | Exception]:
        batches.append(items)
        async with asyncio.timeout(remaining()):
            await asyncio.sleep(10 if stalled else 0.001)
        return items

    commit: GroupCommit[int, int] = GroupCommit(KeyedLocks(), write, max_batch=200)

    async def submit(item: int) -> int:
        with store_deadline(0.3):
            return await commit.submit("cb", item)

    for item in range(3):
        with pytest.raises(TimeoutError):
            await submit(item)
    stalled = False
    assert await submit(3) == 3
    for item in range(4, 20):
        assert await submit(item) == item
    batches.clear()
    assert await asyncio.gather(*(submit(i) for i in range(100))) == list(range(100))
    assert max(len(batch) for batch in batches) >= 32, [len(b) for b in batches]


async def test_a_transaction_of_fixed_cost_takes_every_writer_waiting() -> None:
    """The store's own shape: a transaction costs 0.2 s whatever it holds (statements, a
    synced commit) and little more per item. Sixty writers with 1.5 s each are all
    written, a few transactions in all: counting the fixed cost per item would say one
    item fits, and writers would queue for a transaction each until their budgets ran
    out."""
    batches: list[list[int]] = []

    async def write(key: str, items: list[int]) -> list[int | Exception]:
        batches.append(items)
        async with asyncio.timeout(remaining()):
            await asyncio.sleep(0.2 + 0.0005 * len(items))
        return items

    commit: GroupCommit[int, int] = GroupCommit(KeyedLocks(), write, max_batch=200)

    async def submit(item: int) -> int:
        with store_deadline(1.5):
            return await commit.submit("cb", item)

    assert await submit(0) == 0
    results = await asyncio.gather(*(submit(i) for i in range(1, 61)), return_exceptions=True)
    assert results == list(range(1, 61)), [len(b) for b in batches]
    assert len(batches) <= 6, [len(b) for b in batches]


async def test_a_writer_the_writes_ahead_leave_no_time_is_refused_at_once() -> None:
    """Transactions of 0.3 s whatever they hold. With one in flight, a writer with 1 s of
    budget is written (0.3 s in flight, then its own); one with 0.4 s would time out
    waiting, so it is refused at once, never written, and its budget is not spent."""
    written: list[int] = []

    async def write(key: str, items: list[int]) -> list[int | Exception]:
        await asyncio.sleep(0.3)
        written.extend(items)
        return items

    commit: GroupCommit[int, int] = GroupCommit(KeyedLocks(), write, max_batch=200)

    async def submit(item: int, budget: float) -> int:
        with store_deadline(budget):
            return await commit.submit("cb", item)

    assert await submit(0, 1.0) == 0  # the cost line: 0.3 s a transaction
    in_flight = asyncio.ensure_future(submit(1, 1.0))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await submit(2, 0.4)
    assert asyncio.get_running_loop().time() - started < 0.05
    assert await submit(3, 1.0) == 3
    assert await in_flight == 1
    assert written == [0, 1, 3]


async def test_a_writer_behind_more_batches_than_its_budget_allows_is_refused_at_once() -> None:
    """Transactions of 0.2 s, at most 2 writes each. With one in flight and 7 writers
    waiting, an eighth waits for 4 more transactions (0.8 s) after the one in flight:
    with 0.9 s of budget it is refused at once, not at the end of its budget."""

    async def write(key: str, items: list[int]) -> list[int | Exception]:
        await asyncio.sleep(0.2)
        return items

    commit: GroupCommit[int, int] = GroupCommit(KeyedLocks(), write, max_batch=2)

    async def submit(item: int, budget: float) -> int:
        with store_deadline(budget):
            return await commit.submit("cb", item)

    assert await asyncio.gather(submit(0, 5.0), submit(1, 5.0)) == [0, 1]  # the cost line
    waiting = [asyncio.ensure_future(submit(i, 5.0)) for i in range(2, 10)]
    await asyncio.sleep(0.05)  # one batch in flight, the rest queued
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await submit(10, 0.9)
    assert asyncio.get_running_loop().time() - started < 0.05
    assert await asyncio.gather(*waiting) == list(range(2, 10))
