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

A long job that is mostly model calls (a calibration: hundreds of engine calls) need not hold the
thread from start to end: it runs its own control flow on a worker thread and sends each model call
here with :func:`call`, so that other work (a served request, a model swap) queues behind one call
of it, never behind the whole job.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
THREAD_NAME = "compute"
_HERE = threading.local()  # .compute is True on the compute thread only


def _mark() -> None:
    _HERE.compute = True


# the thread starts on the first call (an executor starts its threads on demand)
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME, initializer=_mark)


def on_compute_thread() -> bool:
    """Whether the caller runs on the compute thread.

    >>> on_compute_thread()
    False
    """
    return getattr(_HERE, "compute", False)


async def run(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on the compute thread; calls queue behind each other."""
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, functools.partial(fn, *args))


def call(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on the compute thread, waiting for it (run directly when the caller is already
    there); for worker threads, never the event loop's thread, which it would block.

    >>> import threading
    >>> call(on_compute_thread), call(threading.current_thread).name.startswith(THREAD_NAME)
    (True, True)
    """
    if on_compute_thread():
        return fn(*args)
    return _EXECUTOR.submit(fn, *args).result()
