"""The OrderManager's order path for the canonical order frame, pure Python: the twin of
ext._orders, and the statement of its contract. The twin is the protocol's own msgspec path
(decode_order, encode_order, encode_ack), so it states no rule of its own.

`OrderDesk(protocol, symbols, booked, journal)`; `book(frame, client, fields, order_no,
received_ns)` books one order frame when it is canonical, i.e. exactly what the protocol's
encoder writes for the order it decodes to, booked under `client` (so the frame's own text,
braces off, is the order's part of its record), valid, and not in `booked` (the (client, id)
-> order_no map), and its record fits the journal's current chunk. Then the record
`{"order_no":N,"received_ns":N,<fields><the order>}` is committed at the journal's cursor
(`journal.mm`, `journal.off`, advanced with `journal.records`, as Journal.commit_order does)
and book returns the ack frame; `last_order()` then returns its Order (the caller asks once the
ack is sent: nothing before the ack needs the Order). Anything else returns None with nothing
done: the caller's Python path decides it (reject, duplicate, chunk switch), so every reason is
its own.

`DeskSession(desk, client, fields, send, booked, other, max_frame, delimiter)` is one client
connection's bulk consumer (reactor.FrameReader.bulk_updated): `consume(buf, start, end)` takes
the complete frames of a read in order; each one the desk books (numbered `desk.order_no + 1`,
received at a CLOCK_MONOTONIC stamp taken as the consumer reaches it) has its ack handed to
`send` at once, then `booked(received_ns, journaled_ns, acked_ns)` runs; each other frame (or
every frame while `desk.enabled` is false) goes to `other(frame)` as a memoryview valid during
the call. A callback returning True stops the consumer there (the connection is going). Empty
frames are skipped; a frame longer than `max_frame` raises ValueError. It returns the offset of
the first byte not consumed: the partial frame, or the frame after a stop.

The caller uses a desk only when nothing else may refuse the order: no kill switch, no risk
limit, and a journal without sync (the desk does not msync). The compiled desk books the same
frames when their strings are printable ASCII without escapes and the price has no exponent;
it declines the rest, which the Python path then books.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ext.journal_py import put_order


class OrderDesk:
    def __init__(self, protocol: ModuleType, symbols: frozenset[str] | set[str],
                 booked: dict[tuple[str, str], int], journal: Any) -> None:
        self.protocol = protocol
        self.symbols = symbols
        self.booked = booked
        self.journal = journal
        self.booked_here = 0
        self.order_no = 0     # the last number given: consume() books the next one
        self.enabled = True   # False: consume() hands every frame to `other`
        self._last: Any = None

    def book(self, frame: memoryview | bytes, client: str, fields: bytes, order_no: int,
             received_ns: int) -> bytes | None:
        protocol = self.protocol
        try:
            order = protocol.decode_order(frame, self.symbols)
        except protocol.ProtocolError:
            return None
        if order.client != client or (client, order.id) in self.booked:
            return None
        encoded = protocol.encode_order(order)
        if encoded[:-1] != frame:
            return None   # not how the encoder writes this order: its record would differ
        journal = self.journal
        if journal.mm is None:
            return None
        end = put_order(journal.mm, journal.off, order_no, received_ns, fields, encoded)
        if end < 0:
            return None
        journal.off = end
        journal.records += 1
        self.booked_here += 1
        self._last = order
        return protocol.encode_ack(order.id, order_no)

    def last_order(self) -> Any:
        """The Order of the last frame book() booked (None before the first)."""
        return self._last


class DeskSession:
    def __init__(self, desk: OrderDesk, client: str, fields: bytes,
                 send: Callable[[bytes], Any], booked: Callable[[int, int, int], Any],
                 other: Callable[[memoryview], Any], max_frame: int, delimiter: bytes) -> None:
        if len(delimiter) != 1:
            raise ValueError("the desk frames on a one-byte delimiter")
        self.desk = desk
        self.client = client
        self.fields = fields
        self.send = send
        self.booked = booked
        self.other = other
        self.max_frame = max_frame
        self.delimiter = delimiter

    def consume(self, buf: bytearray, start: int, end: int) -> int:
        desk, now = self.desk, time.monotonic_ns
        i = start
        while i < end:
            pos = buf.find(self.delimiter, i, end)
            if pos < 0:
                break
            if pos == i:   # an empty frame
                i += 1
                continue
            if pos - i > self.max_frame:
                raise ValueError(f"{pos - i} bytes > max_frame {self.max_frame}")
            received_ns = now()
            frame = memoryview(buf)[i:pos]
            i = pos + 1
            ack = (desk.book(frame, self.client, self.fields, desk.order_no + 1, received_ns)
                   if desk.enabled else None)
            if ack is None:
                if self.other(frame):
                    break
                continue
            journaled_ns = now()
            desk.order_no += 1
            self.send(ack)
            if self.booked(received_ns, journaled_ns, now()):
                break
        return i
