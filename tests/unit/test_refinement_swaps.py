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
