"""The order path, pure Python: the OrderManager's desk for the canonical order frame and the
Strategy's framer and gate; the twin of ext._orders, and the statement of its contract. The twin
is the protocol's own msgspec path (decode_order, encode_order, encode_ack), so it states no
rule of its own.

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
received at a CLOCK_MONOTONIC stamp taken as the consumer reaches it) has its ack written at
once: with one non-blocking send() to `fd` while the connection lends its socket (`fd` >= 0,
reactor.Connection.set_direct), and what that does not take (all of it when `fd` is -1) handed
to `send`, then `booked(received_ns, journaled_ns, acked_ns)` runs; each other frame (or
every frame while `desk.enabled` is false) goes to `other(frame)` as a memoryview valid during
the call. A callback returning True stops the consumer there (the connection is going). Empty
frames are skipped; a frame longer than `max_frame` raises ValueError. It returns the offset of
the first byte not consumed: the partial frame, or the frame after a stop.

`OrderFramer(protocol, id_prefix, client, symbols)` is the Strategy's side (at least one
symbol): `frame(j, buy, seq, qty, price, tick_ns, tick_seq, sent_ns)` returns exactly
`protocol.encode_order` of the Order with id `f"{id_prefix}-{seq}"`, that client, symbol
`symbols[j]` (0 <= j < len(symbols), else IndexError) and side BUY (`buy`) or SELL, so the frame
can go on the wire before the Order is built.

`OrderGate(framer, positions, pending, last_tick_ns, prices, stale, backoff_until, refusing,
max_age_ns)` holds the Strategy host's own per-symbol lists (which the host mutates in place and
never rebinds or resizes) and takes an order from the strategy's submit to the kernel and the
host's books in one call: `send(j, buy, qty, price, now, tick_ns, tick_seq)` (qty > 0, at most
2**63 - 1) answers, in this order, GATE_PENDING (an order of that symbol and side is in flight),
GATE_NO_PRICE / GATE_STALE (with `max_age_ns`: no price yet, or the symbol's last tick is older
than it; a symbol with no tick time is stale as `stale` says) or GATE_BACKOFF (a backoff is set:
the caller decides whether it is over), each with nothing done; or it makes the order: numbers
it (`seq`, the id `f"{framer.id_prefix}-{seq}"`, returned), writes its frame (`frame()`,
`length`) with one non-blocking send() to `fd` (`written` bytes of it: 0 when `fd` is -1, on
EAGAIN or on an error, which the caller's own send then meets), clears `refusing[key]`, counts
it in `pending[key]`, `positions[j]` and `orders`. `length` and `written` describe the last
send() (0 when it made nothing). The Order itself is built later: `take()` returns (Order,
sent, took_ns) of every order made since the last take (`unsettled` of them), sent meaning its
whole frame was written (`sent_last` corrects the last one's; IndexError when there is none)
and took_ns the time from `now` to the send's return.

The caller uses a desk only when nothing else may refuse the order: no kill switch, no risk
limit, and a journal without sync (the desk does not msync). The compiled desk books the same
frames when their strings are printable ASCII without escapes and the price has no exponent;
it declines the rest, which the Python path then books.
"""

from __future__ import annotations

import os
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


class OrderFramer:
    def __init__(self, protocol: ModuleType, id_prefix: str, client: str,
                 symbols: tuple[str, ...] | list[str]) -> None:
        if not symbols:
            raise ValueError("a framer needs at least one symbol")
        self.protocol = protocol
        self.id_prefix = id_prefix
        self.client = client
        self.symbols = tuple(symbols)

    def frame(self, j: int, buy: bool, seq: int, qty: int, price: float, tick_ns: int,
              tick_seq: int, sent_ns: int) -> bytes:
        if not 0 <= j < len(self.symbols):
            raise IndexError(f"symbol index {j} out of range")
        protocol = self.protocol
        return protocol.encode_order(protocol.Order(
            id=f"{self.id_prefix}-{seq}", client=self.client, symbol=self.symbols[j],
            side="BUY" if buy else "SELL", qty=qty, price=price, tick_ns=tick_ns,
            tick_seq=tick_seq, sent_ns=sent_ns))


GATE_PENDING, GATE_NO_PRICE, GATE_STALE, GATE_BACKOFF = -1, -2, -3, -4
MAX_QTY = (1 << 63) - 1   # the compiled gate's int64 qty


class OrderGate:
    def __init__(self, framer: OrderFramer, positions: list[int], pending: list[int],
                 last_tick_ns: list[int], prices: list[float | None], stale: list[bool],
                 backoff_until: list[int], refusing: list[str | None], max_age_ns: int) -> None:
        n = len(framer.symbols)
        if not (len(last_tick_ns) == len(prices) == len(stale) == len(positions) == n
                and len(pending) == len(backoff_until) == len(refusing) == 2 * n):
            raise ValueError("the gate's lists do not match the framer's symbols")
        self.framer = framer
        self.positions = positions
        self.pending = pending
        self.last_tick_ns = last_tick_ns
        self.prices = prices
        self.stale = stale
        self.backoff_until = backoff_until
        self.refusing = refusing
        self.max_age_ns = max_age_ns
        self.fd = -1
        self.length = 0
        self.written = 0
        self.seq = 0
        self.orders = 0
        self._made: list[list[Any]] = []
        self._frame = b""

    @property
    def id_prefix(self) -> str:
        return self.framer.id_prefix

    def send(self, j: int, buy: bool, qty: int, price: float, now: int, tick_ns: int,
             tick_seq: int) -> str | int:
        self.length = self.written = 0
        if not 0 <= j < len(self.prices):
            raise IndexError(f"symbol index {j} out of range")
        if not 0 < qty <= MAX_QTY:
            raise (ValueError if qty < 1 else OverflowError)(f"qty {qty} is out of range")
        key = 2 * j + bool(buy)
        if self.pending[key]:
            return GATE_PENDING
        if self.max_age_ns:
            if self.prices[j] is None:
                return GATE_NO_PRICE
            last = self.last_tick_ns[j]
            if (now - last > self.max_age_ns) if last else self.stale[j]:
                return GATE_STALE
        if self.backoff_until[key]:
            return GATE_BACKOFF
        frame = self.framer.frame(j, buy, self.seq + 1, qty, price, tick_ns, tick_seq, now)
        wrote = 0
        if self.fd >= 0:
            try:
                wrote = os.write(self.fd, frame)
            except OSError:   # EAGAIN, or an error the caller's own send then meets
                wrote = 0
        self._frame, self.length, self.written = frame, len(frame), wrote
        self.seq += 1
        self.orders += 1
        self.refusing[key] = None
        self.pending[key] += 1
        self.positions[j] += qty if buy else -qty
        self._made.append([self.seq, j, buy, qty, price, tick_ns, tick_seq, now,
                           wrote == len(frame), time.monotonic_ns() - now])
        return f"{self.id_prefix}-{self.seq}"

    def frame(self) -> bytes:
        return self._frame

    def sent_last(self, sent: bool) -> None:
        if not self._made:
            raise IndexError("no order made since the last take()")
        self._made[-1][8] = sent

    @property
    def unsettled(self) -> int:
        return len(self._made)

    def take(self) -> list[tuple[Any, bool, int]]:
        made, self._made = self._made, []
        framer = self.framer
        order = framer.protocol.Order
        return [(order(id=f"{framer.id_prefix}-{seq}", client=framer.client,
                       symbol=framer.symbols[j], side="BUY" if buy else "SELL", qty=qty,
                       price=price, tick_ns=tick_ns, tick_seq=tick_seq, sent_ns=sent_ns),
                 sent, took)
                for seq, j, buy, qty, price, tick_ns, tick_seq, sent_ns, sent, took in made]


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
        self.fd = -1

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
            wrote = 0
            if self.fd >= 0:
                try:
                    wrote = os.write(self.fd, ack)
                except OSError:   # EAGAIN, or an error that send() then meets
                    wrote = 0
            if wrote < len(ack):
                self.send(ack[wrote:])
            if self.booked(received_ns, journaled_ns, now()):
                break
        return i
