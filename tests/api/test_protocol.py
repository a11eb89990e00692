"""The coalescing transport of :mod:`annotation_gateway.api.protocol`: a short write (a response's
head) goes out with the next write in one ``writelines``, or alone at the end of the event loop's
turn, its bytes in order.

What reaches the socket in one system call cannot be seen from a peer (the kernel joins
segments in the receive queue), so these tests give the transport a recorder of the calls it
makes. That the server still answers correctly through it — heads, bodies, streams, ``408`` then
close — is what every served test (``test_slow_clients.py``, ``test_fastlane.py``'s parity, the
CLI's) checks over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from annotation_gateway.api.protocol import HOLD_BYTES, CoalescingTransport


class Recorder(asyncio.Transport):
    """A transport that records what it is asked to do (a write is a list of one buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview[Any]]) -> None:
        self.calls.append(("writelines", [bytes(d) for d in list_of_data]))

    def close(self) -> None:
        self.calls.append(("close", []))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", []))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


async def _turns(n: int = 2) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_head_goes_out_with_the_body_in_one_call() -> None:
    sent = Recorder()
    transport = CoalescingTransport(sent, asyncio.get_running_loop())
    transport.write(HEAD)
    assert sent.calls == []
    assert transport.get_write_buffer_size() == len(HEAD)
    transport.write(b"hello")
    assert sent.calls == [("writelines", [HEAD, b"hello"])]
    await _turns()
    assert sent.calls == [("writelines", [HEAD, b"hello"])], "nothing is sent twice"


async def test_a_short_write_alone_goes_out_when_the_loop_turns() -> None:
    sent = Recorder()
    transport = CoalescingTransport(sent, asyncio.get_running_loop())
    transport.write(b"0\r\n\r\n")
    assert sent.calls == []
    await _turns()
    assert sent.calls == [("write", [b"0\r\n\r\n"])]
    transport.write(b"x" * (HOLD_BYTES + 1))
    assert sent.calls[-1] == ("write", [b"x" * (HOLD_BYTES + 1)]), "a long write is not held"


async def test_bytes_keep_their_order_through_writelines_close_and_eof() -> None:
    loop = asyncio.get_running_loop()
    sent = Recorder()
    transport = CoalescingTransport(sent, loop)
    transport.write(b"a")
    transport.writelines([b"b", b"c"])
    assert sent.calls == [("writelines", [b"a", b"b", b"c"])]
    transport.write(b"d")
    transport.close()
    assert sent.calls[1:] == [("write", [b"d"]), ("close", [])]
    await _turns()
    assert len(sent.calls) == 3


async def test_abort_drops_what_is_held_and_a_closed_transport_gets_nothing() -> None:
    loop = asyncio.get_running_loop()
    sent = Recorder()
    transport = CoalescingTransport(sent, loop)
    transport.write(b"head")
    transport.abort()
    await _turns()
    assert sent.calls == [("abort", [])]
    other = Recorder()
    transport = CoalescingTransport(other, loop)
    transport.write(b"head")
    other.closing = True  # the connection went away before the loop turned
    await _turns()
    assert other.calls == []


async def test_a_buffer_its_owner_reuses_is_held_as_a_copy() -> None:
    sent = Recorder()
    transport = CoalescingTransport(sent, asyncio.get_running_loop())
    buffer = bytearray(b"head")
    transport.write(buffer)
    buffer[:] = b"XXXX"
    transport.write(b"body")
    assert sent.calls == [("writelines", [b"head", b"body"])]


@pytest.mark.parametrize("empty", [b"", bytearray()])
async def test_an_empty_write_holds_nothing(empty: bytes | bytearray) -> None:
    sent = Recorder()
    transport = CoalescingTransport(sent, asyncio.get_running_loop())
    transport.write(empty)
    assert transport.get_write_buffer_size() == 0
    await _turns()
    assert sent.calls == []
