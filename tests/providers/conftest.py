"""Fixtures the provider tests share."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects while a test runs (a cycle would stay)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
