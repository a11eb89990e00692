"""The shared cache tier's keys and Lua scripts: what it keeps in Redis and what runs there, one
round trip each.

Contract: :class:`TierKeys` names every key (the layout is in :mod:`.redis_tier`'s docstring,
*Keys*). :data:`LOOKUP` (read the generation and the subjects' values, take the single-flight
lock when one is missing or not fresh), :data:`STORE` (free the lock; store, or re-date an
unchanged value, only while the source's generation is the one read before the upstream call)
and :data:`INVALIDATE` (bump the generation, drop the subjects' hashes, publish the message). The
comment above each gives its KEYS, ARGV and reply; the reply codes are the constants below them.
They read the value format of :mod:`annotation_gateway.cache.codec` by position: bytes 1-4 its
magic, 5-12 the big-endian double ``stored_at``, 13-20 what tells two answers apart (header
length and CRC-32), the first 20 its head (``tests/cache/test_codec.py`` holds the layout;
``tests/cache/test_redis_tier.py`` runs the scripts on a real ``redis-server``).
"""

from __future__ import annotations

import hashlib

import orjson

from annotation_gateway.cache.codec import FORMAT_VERSION, MAGIC
from annotation_gateway.cache.tier import FilterKey, Slot

__all__ = ["ALL_FRESH", "FREE", "HELD", "INVALIDATE", "LOOKUP", "NOT_OURS", "STORE", "TAKEN", "TierKeys"]

MAX_MEMO = 4096
"""Filter keys whose hash field is remembered (the memo is dropped whole when full)."""


class TierKeys:
    """The names of what the tier keeps in Redis under ``{prefix}:{FORMAT_VERSION}``."""

    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}:{FORMAT_VERSION}"
        self.channel = f"{self.base}:inval"
        """The invalidation channel."""
        self._fields: dict[FilterKey, str] = {}

    def subject(self, source: str, slot: Slot) -> str:
        """The hash holding ``source``'s answers about ``slot`` (``None``: identifier-only)."""
        return f"{self.base}:{source}:i" if slot is None else f"{self.base}:{source}:s:{slot}"

    def generation(self, source: str) -> str:
        """``source``'s write generation."""
        return f"{self.base}:{source}:gen"

    def answers_pattern(self, source: str) -> str:
        """A ``SCAN`` pattern matching every hash of ``source``, not its generation or locks
        (neither the prefix nor a source name may hold a pattern character: their settings'
        patterns)."""
        return f"{self.base}:{source}:[si]*"

    @staticmethod
    def field_of(fkey: FilterKey) -> str:
        """The hash field of a filter key: blake2b of its canonical JSON."""
        return hashlib.blake2b(orjson.dumps(fkey), digest_size=12).hexdigest()

    def field(self, fkey: FilterKey) -> str:
        """:meth:`field_of`, remembered."""
        field = self._fields.get(fkey)
        if field is None:
            if len(self._fields) >= MAX_MEMO:
                self._fields.clear()
            field = self._fields[fkey] = self.field_of(fkey)
        return field

    def lock(self, source: str, field: str, slots: list[Slot]) -> str:
        """The single-flight lock of (source, filter, those subjects)."""
        chunk = hashlib.blake2b(
            orjson.dumps(sorted(s if s is not None else "" for s in slots)), digest_size=12
        ).hexdigest()
        return f"{self.base}:{source}:lock:{field}:{chunk}"


# KEYS: gen, lock, subject hashes...; ARGV: field, fresh-after (wall epoch), lock token ('' none),
# lock ms, then per subject the head (20 bytes) of the value the caller holds ('' none).
# Returns {gen, lock state, values...}. Lock state: 2 every value fresh (no lock), 1 taken by us,
# 0 held by another process, 3 free but not taken (no token given). A value: its bytes when
# fresh; only its head when fresh and the same answer as the caller holds (same header length
# and CRC; the date may be newer); 1 when present but not fresh (not sent); 2 when not a value
# of this format; nil when absent.
LOOKUP = """
local out = {redis.call('GET', KEYS[1]) or '0', 2}
local fresh_after = tonumber(ARGV[2])
local all_fresh = true
for i = 3, #KEYS do
  local v = redis.call('HGET', KEYS[i], ARGV[1])
  if v then
    if string.sub(v, 1, 4) ~= '@MAGIC@' or string.len(v) < 20 then
      out[i] = 2
      all_fresh = false
    elseif struct.unpack('>d', string.sub(v, 5, 12)) >= fresh_after then
      local held = ARGV[i + 2]
      if held ~= '' and string.sub(v, 13, 20) == string.sub(held, 13, 20) then
        out[i] = string.sub(v, 1, 20)
      else
        out[i] = v
      end
    else
      out[i] = 1
      all_fresh = false
    end
  else
    out[i] = false
    all_fresh = false
  end
end
if not all_fresh then
  if ARGV[3] ~= '' then
    if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then out[2] = 1 else out[2] = 0 end
  elseif redis.call('EXISTS', KEYS[2]) == 1 then out[2] = 0 else out[2] = 3 end
end
return out
""".replace("@MAGIC@", MAGIC.decode())

# KEYS: gen, lock, subject hashes...; ARGV: expected gen, field, expiry ms, lock token ('' none),
# values..., max variants. Frees our lock; stores only while the generation is the one read before
# the upstream call started. A value "T" + new head re-dates the stored value with the same header
# length and CRC (the same answer fetched again; never to an older date). Returns {generation,
# the 1-based positions of the re-datings that found no such value (to be sent whole)...}.
STORE = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local gen = redis.call('GET', KEYS[1]) or '0'
if #KEYS < 3 or gen ~= ARGV[1] then return {gen} end
local out = {gen}
for i = 3, #KEYS do
  local a = ARGV[i + 2]
  if string.sub(a, 1, 1) == 'T' then
    local v = redis.call('HGET', KEYS[i], ARGV[2])
    if v and string.sub(v, 1, 4) == '@MAGIC@' and string.sub(v, 13, 20) == string.sub(a, 14, 21) then
      if struct.unpack('>d', string.sub(v, 5, 12)) < struct.unpack('>d', string.sub(a, 6, 13)) then
        redis.call('HSET', KEYS[i], ARGV[2], string.sub(a, 2, 21) .. string.sub(v, 21))
      end
      redis.call('PEXPIRE', KEYS[i], ARGV[3])
    else
      out[#out + 1] = i - 2
    end
  else
    if redis.call('HLEN', KEYS[i]) >= tonumber(ARGV[5 + #KEYS - 2]) then redis.call('DEL', KEYS[i]) end
    redis.call('HSET', KEYS[i], ARGV[2], a)
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
return out
""".replace("@MAGIC@", MAGIC.decode())

# KEYS: gen, subject hashes...; ARGV: channel, message.
INVALIDATE = """
redis.call('INCR', KEYS[1])
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

ALL_FRESH, TAKEN, HELD, FREE = 2, 1, 0, 3
"""LOOKUP's lock state: every value fresh (no lock taken), taken by the caller, held by another
process, free but not taken (no token given)."""
NOT_OURS = 2
"""LOOKUP's answer for a value that is not of this format."""
