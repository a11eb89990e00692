"""``api/routes/annotations.py``: the client's ``Cache-Control`` applied to the query — the
polled no-cache query reused as the memo holds it, every other policy applied to a copy."""

from __future__ import annotations

import math
from urllib.parse import urlencode

from annotation_gateway.api.routes.annotations import DEFAULT_POLICY, parse_cache_control
from annotation_gateway.api.schemas import list_query

RAW = urlencode({"subject_id": ["s1", "s2"], "name": "resolution"}, doseq=True).encode()


def test_the_default_policy_leaves_the_query_as_it_is() -> None:
    query = list_query(RAW, use_cache=True)
    assert parse_cache_control(None) is DEFAULT_POLICY
    assert DEFAULT_POLICY.apply(query) is query


def test_a_polled_no_cache_query_is_the_memos_own_not_a_copy_validated_again() -> None:
    policy = parse_cache_control("no-cache")
    query = list_query(RAW, use_cache=policy.use_cache)
    applied = policy.apply(query)
    assert applied is query
    assert applied.use_cache is False
    assert applied.max_stale_s is None
    # A query built for the cache still gets the client's no-cache.
    copy = policy.apply(list_query(RAW, use_cache=True))
    assert copy.use_cache is False
    assert copy == query


def test_max_stale_is_applied_to_a_copy_with_and_without_no_cache() -> None:
    query = list_query(RAW, use_cache=True)
    stale = parse_cache_control("max-stale=60").apply(query)
    assert (stale.use_cache, stale.max_stale_s) == (True, 60.0)
    assert query.max_stale_s is None  # the memo's query is unchanged
    both = parse_cache_control("no-cache, max-stale").apply(list_query(RAW, use_cache=False))
    assert both.use_cache is False
    assert both.max_stale_s == math.inf
    assert both.subject_ids == query.subject_ids
