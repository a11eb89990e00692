"""The shared tier's key names, checked on a real ``redis-server``: what ``SCAN`` with a source's
answers pattern finds (dropping a source after a lost invalidation deletes exactly those keys)."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from annotation_gateway.cache.redis_scripts import TierKeys
from tests.plugins.redis import RedisServer


def test_a_sources_answers_pattern_finds_its_hashes_and_nothing_else(redis_server: RedisServer) -> None:
    keys = TierKeys(f"t{uuid.uuid4().hex[:8]}")
    ours = [keys.subject("dd", "sess-1"), keys.subject("dd", "i"), keys.subject("dd", None)]
    others = [
        keys.generation("dd"),  # the generation: read-your-write depends on it
        keys.lock("dd", keys.field(("f",)), ["sess-1"]),
        keys.subject("dd2", "sess-1"),  # another source whose name starts alike
        keys.subject("d", "d:s:x"),
        keys.channel,
    ]

    async def scan() -> set[str]:
        client = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            for key in ours + others:
                await client.set(key, "1")
            found = {key async for key in client.scan_iter(match=keys.answers_pattern("dd"), count=10)}
            await client.delete(*ours, *others)
            return found
        finally:
            await client.aclose()

    assert asyncio.run(scan()) == set(ours)
    assert len({*ours, *others}) == len(ours) + len(others)  # every name distinct
    assert keys.field(("f",)) == TierKeys.field_of(("f",))  # remembered, the same
