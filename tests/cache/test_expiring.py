"""The expiring map of :mod:`annotation_gateway.cache.expiring` (the answer cache's groups, the
federation's merged results), on a clock the tests move."""

from __future__ import annotations

import pytest

from annotation_gateway.cache.expiring import ExpiringMap
from tests.fakes import ManualClock


def _map(
    clock: ManualClock, *, ttl: float = 10.0, max_weight: int = 100, weighed: bool = False
) -> ExpiringMap[str, str]:
    return ExpiringMap(ttl=ttl, max_weight=max_weight, clock=clock, weigh=len if weighed else None)


def test_a_value_is_kept_its_ttl_after_its_last_store() -> None:
    clock = ManualClock()
    held = _map(clock)
    assert held.put("a", "x")
    clock.advance(6)
    held.put("a", "y")  # its time starts again
    clock.advance(6)
    held.put("b", "z")  # a store sweeps what expired: not "a", stored 6 s ago
    assert held.get("a") == "y"
    assert len(held) == 2
    clock.advance(4)
    assert len(held) == 1, "a at 10 s after its last store is gone"
    assert held.get("a") is None
    assert held.held_keys() == ["b"]


def test_a_value_past_its_time_is_readable_until_a_store_sweeps_it() -> None:
    # Reads check no time (the callers' entries carry their own age); expiry is about memory.
    clock = ManualClock()
    held = _map(clock)
    held.put("a", "x")
    clock.advance(11)
    assert held.get("a") == "x"
    held.put("b", "y")
    assert held.get("a") is None


def test_past_the_bound_the_value_stored_longest_ago_goes_first() -> None:
    clock = ManualClock()
    held = _map(clock, max_weight=3)
    for key in "abc":
        held.put(key, key)
        clock.advance(1)
    held.put("a", "again")  # stored again: now the newest
    held.put("d", "d")
    assert held.held_keys() == ["c", "a", "d"]
    assert held.get("b") is None


def test_weights_bound_the_total_and_an_outweighing_value_is_not_kept() -> None:
    clock = ManualClock()
    held = _map(clock, max_weight=10, weighed=True)
    assert held.put("a", "xxxx")
    assert held.put("b", "xxxx")
    assert held.put("c", "xxxx")  # 12 > 10: "a" goes
    assert held.held_keys() == ["b", "c"]
    assert not held.put("b", "x" * 11)  # alone over the bound: not kept, nor what it replaced
    assert held.get("b") is None
    assert held.held_keys() == ["c"]
    assert held.put("d", "x" * 6)  # 4 + 6 fits: the weight of "b" was given back
    assert held.held_keys() == ["c", "d"]


def test_pop_and_clear() -> None:
    clock = ManualClock()
    held = _map(clock, weighed=True)
    held.put("a", "xx")
    assert held.pop("a") == "xx"
    assert held.pop("a", "gone") == "gone"
    held.put("b", "x" * 100)  # the popped value's weight was given back
    held.clear()
    assert len(held) == 0
    assert held.put("c", "x" * 100)


@pytest.mark.parametrize(("ttl", "max_weight"), [(0.0, 1), (1.0, 0)])
def test_a_map_that_could_hold_nothing_is_refused(ttl: float, max_weight: int) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        ExpiringMap(ttl=ttl, max_weight=max_weight, clock=ManualClock())
