"""Admission control (http/admission.py): bounded work, predicted waits, fast refusals."""

from __future__ import annotations

import asyncio
import time

import pytest

from pollybot_leads.errors import Overloaded
from pollybot_leads.http.admission import Lane


async def hold(lane: Lane, seconds: float, log: list[str], name: str, budget: float = 5.0) -> None:
    await lane.acquire(time.monotonic() + budget)
    log.append(f"start {name}")
    started = time.monotonic()
    try:
        await asyncio.sleep(seconds)
    finally:
        log.append(f"end {name}")
        lane.release(time.monotonic() - started)


async def refused_at_once(lane: Lane, budget: float) -> Overloaded:
    """The lane refuses a request with ``budget`` without making it wait."""
    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await lane.acquire(time.monotonic() + budget)
    assert time.monotonic() - started < 0.05
    return refused.value


async def test_at_most_limit_at_work_and_the_rest_served_in_order() -> None:
    lane = Lane("read", limit=2, max_wait=5.0, initial=0.01)
    log: list[str] = []
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, lane.active)
            await asyncio.sleep(0.001)

    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*(hold(lane, 0.02, log, str(n)) for n in range(6)))
    watcher.cancel()
    assert peak == 2
    assert [entry for entry in log if entry.startswith("start")] == [f"start {n}" for n in range(6)]
    assert lane.active == 0 and lane.waiting == 0


async def test_a_wait_that_would_not_leave_time_to_be_served_is_refused_at_once() -> None:
    lane = Lane("write", limit=1, max_wait=5.0, initial=0.5)
    log: list[str] = []
    first = asyncio.ensure_future(hold(lane, 0.3, log, "first"))
    await asyncio.sleep(0)
    started = time.monotonic()
    # Half a second at work for the one ahead, half a second for itself: 0.8 s is too short.
    with pytest.raises(Overloaded) as refused:
        await lane.acquire(time.monotonic() + 0.8)
    assert time.monotonic() - started < 0.05
    assert refused.value.status == 503
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert lane.waiting == 0
    await first
    # With time enough it waits its turn and is served.
    await lane.acquire(time.monotonic() + 5)
    lane.release(0.01)
    assert lane.active == 0


async def test_a_queue_longer_than_max_wait_is_refused_at_once() -> None:
    lane = Lane("read", limit=1, max_wait=0.05, initial=0.02)
    log: list[str] = []
    tasks = [asyncio.ensure_future(hold(lane, 0.02, log, str(n))) for n in range(5)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if r is None]
    # One at work, and a queue of two (0.04 s predicted); the fourth and fifth refused.
    assert len(served) == 3 and len(refused) == 2
    assert lane.active == 0


async def test_a_silent_full_lane_refuses_newcomers_at_once() -> None:
    lane = Lane("read", limit=2, max_wait=5.0, initial=0.01)
    stalled = asyncio.Event()

    async def stuck() -> None:
        await lane.acquire(time.monotonic() + 5)
        try:
            await stalled.wait()
        finally:
            lane.release(None)

    holders = [asyncio.ensure_future(stuck()) for _ in range(2)]
    await asyncio.sleep(0.6)  # nothing given back for 0.6 s: the store answers nothing

    # Each place in the queue is predicted 0.6 s / 2 slots: three fit in 1 s, not four.
    async def served() -> None:
        await lane.acquire(time.monotonic() + 1.0)
        lane.release(None)

    queued = [asyncio.ensure_future(served()) for _ in range(3)]
    await asyncio.sleep(0)
    assert lane.waiting == 3
    await refused_at_once(lane, 1.0)
    stalled.set()
    await asyncio.gather(*holders)
    await asyncio.gather(*queued)  # served once the store answers again
    assert lane.active == 0


async def test_a_burst_after_a_quiet_spell_queues_instead_of_being_refused() -> None:
    """A lane idle for a while, then filled at once by a burst, has been silent for no time:
    the requests beyond its width wait their turn (it was refusing them, counting the quiet
    spell before the burst as silence)."""
    lane = Lane("read", limit=2, max_wait=5.0, initial=0.01)
    await asyncio.sleep(0.6)  # nothing asked, nothing given back
    log: list[str] = []
    results = await asyncio.gather(
        *(hold(lane, 0.02, log, str(n), budget=1.0) for n in range(8)), return_exceptions=True
    )
    assert results == [None] * 8
    assert lane.active == 0


async def test_a_waiter_whose_budget_ran_out_in_the_queue_is_refused_and_leaves_it() -> None:
    lane = Lane("write", limit=1, max_wait=5.0, initial=0.01)
    log: list[str] = []
    first = asyncio.ensure_future(hold(lane, 0.3, log, "first"))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(Overloaded):
        await lane.acquire(time.monotonic() + 0.1)
    assert 0.05 < time.monotonic() - started < 0.2
    assert lane.waiting == 0
    await first
    assert lane.active == 0


async def test_a_turn_that_comes_too_late_is_refused_not_started() -> None:
    lane = Lane("write", limit=1, max_wait=5.0, initial=0.01)
    await lane.acquire(time.monotonic() + 5)
    waiter = asyncio.ensure_future(lane.acquire(time.monotonic() + 0.3))
    await asyncio.sleep(0.05)
    lane.kind_service[False] = 1.0  # its requests have become slow: 0.25 s left is too little
    lane.release(None)
    with pytest.raises(Overloaded):
        await waiter
    assert lane.active == 0 and lane.waiting == 0


async def test_a_waiter_cancelled_as_its_turn_came_gives_the_slot_back() -> None:
    lane = Lane("read", limit=1, max_wait=5.0, initial=0.01)
    await lane.acquire(time.monotonic() + 5)
    waiter = asyncio.ensure_future(lane.acquire(time.monotonic() + 5))
    await asyncio.sleep(0)
    lane.release(0.01)  # hands the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert lane.active == 0
    await lane.acquire(time.monotonic() + 5)  # the slot is free again
    lane.release(0.01)


async def test_after_failures_in_a_row_one_request_at_a_time_tries_the_store() -> None:
    lane = Lane("read", limit=4, max_wait=5.0, initial=0.01)
    for _ in range(3):  # three requests that found the store unavailable
        await lane.acquire(time.monotonic() + 5)
        lane.release(1.5, failed=True)
    assert lane.width == 1
    await lane.acquire(time.monotonic() + 1.5)  # the probe
    started = time.monotonic()
    with pytest.raises(Overloaded):  # the rest are refused at once while it runs
        await lane.acquire(time.monotonic() + 1.5)
    assert time.monotonic() - started < 0.05
    lane.release(0.01)  # the probe succeeded: the lane opens again
    assert lane.width == 4 and lane.active == 0
    for _ in range(4):
        await lane.acquire(time.monotonic() + 5)
    assert lane.active == 4


async def test_a_lane_that_narrows_refuses_its_queue_at_once() -> None:
    lane = Lane("write", limit=2, max_wait=5.0, initial=0.01)
    lane.failing = 2
    await lane.acquire(time.monotonic() + 5)
    await lane.acquire(time.monotonic() + 5)
    waiter = asyncio.ensure_future(lane.acquire(time.monotonic() + 5))
    await asyncio.sleep(0)
    lane.release(1.5, failed=True)  # the third failure in a row: one slot from now on
    with pytest.raises(Overloaded):
        await waiter
    assert lane.active == 1 and lane.waiting == 0


async def test_a_quick_request_waits_ahead_of_the_others() -> None:
    """One slot, held; a list waits, then a GET of one lead arrives: the GET gets the slot
    first, and the list the one after."""
    lane = Lane("read", limit=1, max_wait=5.0, initial=0.01)
    deadline = time.monotonic() + 5.0
    await lane.acquire(deadline)
    order: list[str] = []

    async def wait(name: str, quick: bool) -> None:
        await lane.acquire(deadline, quick=quick)
        order.append(name)

    slow = asyncio.ensure_future(wait("list", False))
    await asyncio.sleep(0)
    fast = asyncio.ensure_future(wait("get", True))
    await asyncio.sleep(0)
    assert lane.waiting == 2
    lane.release(0.01)
    await asyncio.sleep(0)
    assert order == ["get"]
    lane.release(0.01)
    await asyncio.gather(slow, fast)
    assert order == ["get", "list"]
    lane.release(0.01)
    assert lane.active == 0 and lane.waiting == 0


async def test_a_list_overdue_behind_a_stream_of_gets_is_served_not_refused() -> None:
    """A stream of GETs keeps the one slot busy; a list waiting behind them, allowed 0.4 s
    of waiting, goes first once it has waited half of that: served, where it would have
    waited to the end of its wait and been refused."""
    lane = Lane("read", limit=1, max_wait=0.4, initial=0.01)
    order: list[str] = []

    async def request(name: str, quick: bool, seconds: float) -> None:
        await lane.acquire(time.monotonic() + 5.0, quick=quick)
        order.append(name)
        await asyncio.sleep(seconds)
        lane.release(seconds)

    gets = []
    waiting_list = None
    began = time.monotonic()
    for n in range(60):  # 0.6 s of GETs, twice as many as the slot serves: always waiting
        gets.append(asyncio.ensure_future(request(f"get {n}", True, 0.01)))
        gets.append(asyncio.ensure_future(request(f"get {n}b", True, 0.01)))
        if n == 1:
            waiting_list = asyncio.ensure_future(request("list", False, 0.01))
        await asyncio.sleep(0.01)
    assert waiting_list is not None
    await waiting_list  # served: Overloaded would raise here
    served_at = order.index("list")
    assert 0 < served_at < len(order) - 1  # after some GETs, before the stream ended
    await asyncio.gather(*gets, return_exceptions=True)
    assert time.monotonic() - began < 2


async def test_a_list_behind_lists_is_refused_at_once_when_a_get_would_still_wait() -> None:
    """Lists have been taking 0.2 s each, GETs 0.01 s; one slot. Behind three waiting
    lists, a fourth would wait about 0.8 s: refused at once with 0.5 s allowed. A GET
    goes ahead of those lists, and is queued."""
    lane = Lane("read", limit=1, max_wait=0.5, initial=0.01)
    lane.kind_service.update({True: 0.01, False: 0.2})
    await lane.acquire(time.monotonic() + 5)
    lists = [asyncio.ensure_future(lane.acquire(time.monotonic() + 5)) for _ in range(3)]
    await asyncio.sleep(0)
    assert lane.waiting == 3
    await refused_at_once(lane, 5.0)
    get = asyncio.ensure_future(lane.acquire(time.monotonic() + 5, quick=True))
    await asyncio.sleep(0)
    assert lane.waiting == 4
    for _ in range(5):
        lane.release(0.01)
        await asyncio.sleep(0)
    await asyncio.gather(get, *lists)


async def test_a_list_is_refused_at_once_while_gets_take_the_whole_lane() -> None:
    """GETs arriving as fast as the lane serves them leave nothing to a list waiting
    behind them: refused at once (its wait has no end), to retry after the second over
    which their share is measured."""
    lane = Lane("read", limit=1, max_wait=1.0, initial=0.01)
    lane.kind_service.update({True: 0.02, False: 0.2})
    await lane.acquire(time.monotonic() + 5)
    for _ in range(60):  # 60 GETs in the last second, 20 ms each: the whole slot
        lane._quick_arrivals.append(time.monotonic())
    refused = await refused_at_once(lane, 5.0)
    assert refused.headers["Retry-After"] == "1"
    lane.release(0.01)


async def test_a_lane_of_gets_alone_remembers_only_the_last_second_of_them() -> None:
    """The quick requests' rate is counted over the last second; with no other request
    to count it for, the older ones are still forgotten (memory stays flat)."""
    lane = Lane("read", limit=4, max_wait=1.0, initial=0.01)
    lane._quick_arrivals.extend([time.monotonic() - 5.0] * 1000)
    await lane.acquire(time.monotonic() + 5, quick=True)
    lane.release(0.01, quick=True)
    assert len(lane._quick_arrivals) == 1
