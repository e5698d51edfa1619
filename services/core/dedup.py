"""Which events a consumer group has already handled, for at-least-once delivery.

The broker may deliver an event again (a consumer died before committing, a broker restart, a
rebalance). ``ObjectStoreDedup`` records each handled event id as an empty object in the artifact
store, so a redelivery is recognised by any replica of the group, even after a restart. A small
in-memory cache in front answers repeats without a round trip.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Protocol

from selfimprove.core.store import ArtifactStore


class Dedup(Protocol):
    async def seen(self, event_id: str) -> bool: ...

    async def mark(self, event_id: str) -> None: ...


class MemoryDedup:
    """Remembers the last ``capacity`` event ids of this process only."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    async def seen(self, event_id: str) -> bool:
        return event_id in self._ids

    async def mark(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class ObjectStoreDedup:
    """Durable marks under ``dedup/<group>/<event id>`` in the artifact store."""

    def __init__(self, store: ArtifactStore, group: str, cache: MemoryDedup | None = None) -> None:
        self.store = store
        self.prefix = f"dedup/{group}/"
        self.cache = cache or MemoryDedup()

    async def seen(self, event_id: str) -> bool:
        if await self.cache.seen(event_id):
            return True
        found = await asyncio.to_thread(self.store.exists, self.prefix + event_id)
        if found:
            await self.cache.mark(event_id)
        return found

    async def mark(self, event_id: str) -> None:
        await asyncio.to_thread(self.store.put_bytes, self.prefix + event_id, b"")
        await self.cache.mark(event_id)
