"""The allocator setting (``allocator.py``): glibc maps big blocks, and keeps doing so.

Run in a child process, since the setting is the whole process's: glibc's ``mallinfo2`` says
how many bytes are in mapped blocks (``hblkhd``) while a big ``bytes`` is held."""

from __future__ import annotations

import json
import subprocess
import sys

from annotation_gateway.allocator import fix_mmap_threshold

CHILD = r"""
import ctypes, json, sys
from annotation_gateway.allocator import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mapped_while_held(size):
    before = libc.mallinfo2().hblkhd
    block = bytes(size)
    held = libc.mallinfo2().hblkhd - before
    del block
    return held

fixed = fix_mmap_threshold(int(sys.argv[1])) if int(sys.argv[1]) else False
first = mapped_while_held(8 * 1024 * 1024)   # freed: glibc's own threshold rises to 8 MiB
second = mapped_while_held(2 * 1024 * 1024)
print(json.dumps({"fixed": fixed, "first": first, "second": second}))
"""


def run_child(threshold: int) -> dict[str, int | bool]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(threshold)], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, int | bool] = json.loads(done.stdout)
    return result


def test_big_blocks_stay_mapped_once_the_threshold_is_fixed() -> None:
    MiB = 1024 * 1024
    fixed = run_child(128 * 1024)
    assert fixed["fixed"] is True
    assert int(fixed["first"]) >= 8 * MiB
    assert int(fixed["second"]) >= 2 * MiB  # still its own mapping, given back when freed
    # glibc's default: the first big block freed raised the threshold, the next comes from the heap
    default = run_child(0)
    assert default["fixed"] is False
    assert int(default["first"]) >= 8 * MiB
    assert int(default["second"]) < 2 * MiB


def test_zero_leaves_the_allocator_alone() -> None:
    assert fix_mmap_threshold(0) is False
