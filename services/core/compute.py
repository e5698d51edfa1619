"""One thread per process for model work (anything that runs torch).

PyTorch's CPU build parallelises with libgomp, which gives every thread that enters a parallel
region an OpenMP team of its own, kept for the thread's life. Once a process holds more OpenMP
threads than it has CPUs, libgomp stops spinning at barriers in every team and puts the threads to
sleep instead (its throttled spin count); then each of the thousands of barriers in a training step
is a futex sleep and wake-up, and the woken thread often lands on the waker's CPU. In the trainer,
one job run on a second thread of asyncio's default executor was enough: the trainer used 1.2 of
its 2 cores from then on, not 1.85 (``benchmarks/training_speed.py --against second-team``
measures it). So stages run their model work here, on one long-lived thread; I/O stays on
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
THREAD_NAME = "compute"
# the thread starts on the first call (an executor starts its threads on demand)
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)


async def run(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on the compute thread; calls queue behind each other."""
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, functools.partial(fn, *args))
