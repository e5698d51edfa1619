"""The refinement swapper loads only the newest of promotions that arrive close together."""

import asyncio

import pytest

from selfimprove.refinement.swaps import LatestOnly

pytestmark = pytest.mark.unit


async def test_a_burst_of_offers_applies_only_the_newest_and_later_offers_apply_again():
    applied = []

    async def apply(item):
        applied.append(item)

    swaps = LatestOnly(apply, settle_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(swaps.run(stop))
    for i in range(5):  # a replica catching up on the control topic
        swaps.offer(i)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert applied == [4]
    swaps.offer(5)  # a promotion later in the run
    await asyncio.sleep(0.2)
    assert applied == [4, 5]
    stop.set()
    await asyncio.wait_for(task, 1)
    assert swaps.pending is None


async def test_a_promotion_that_fails_to_apply_is_reported_and_serving_goes_on():
    applied, failed = [], []

    async def apply(item):
        if item == "broken":
            raise OSError("adapter folder is not readable")
        applied.append(item)

    swaps = LatestOnly(apply, settle_s=0.02, on_error=lambda item, exc: failed.append((item, str(exc))))
    stop = asyncio.Event()
    task = asyncio.create_task(swaps.run(stop))
    swaps.offer("broken")
    await asyncio.sleep(0.15)
    swaps.offer("good")
    await asyncio.sleep(0.15)
    assert failed == [("broken", "adapter folder is not readable")] and applied == ["good"]
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_stop_while_idle_returns():
    async def apply(item):
        raise AssertionError("nothing was offered")

    swaps = LatestOnly(apply, settle_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(swaps.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_a_promotion_that_meets_a_store_outage_is_applied_once_the_store_is_back():
    from selfimprove.core.storeerrors import StoreUnavailableError

    tries, applied, failed = [], [], []

    async def apply(item):
        tries.append(item)
        if len(tries) < 3:  # the object store is down for the first two tries
            raise StoreUnavailableError("object store 127.0.0.1:1 unavailable (get adapter)")
        applied.append(item)

    swaps = LatestOnly(apply, settle_s=0.01, on_error=lambda item, exc: failed.append(item), retry_s=0.03)
    stop = asyncio.Event()
    task = asyncio.create_task(swaps.run(stop))
    swaps.offer("promoted")
    await asyncio.sleep(0.4)
    assert tries == ["promoted"] * 3 and applied == ["promoted"] and failed == []
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_a_newer_promotion_replaces_one_waiting_out_a_store_outage():
    from selfimprove.core.storeerrors import StoreUnavailableError

    applied = []

    async def apply(item):
        if item == "old":
            raise StoreUnavailableError("down")
        applied.append(item)

    swaps = LatestOnly(apply, settle_s=0.01, retry_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(swaps.run(stop))
    swaps.offer("old")
    await asyncio.sleep(0.05)
    swaps.offer("new")  # arrives while "old" waits for its retry
    await asyncio.sleep(0.5)
    assert applied == ["new"]
    stop.set()
    await asyncio.wait_for(task, 1)
