"""The Strategy's native order path, compiled (ext._orders) and twin (ext.orders_py): the framer
writes exactly the protocol encoder's frame of the order it is given, and the gate refuses an
order for the host's reasons with nothing done, or makes it (numbered, on the wire, in the host's
books) and builds its Order later, equal to what went on the wire."""

from __future__ import annotations

import socket
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twinutil import compiled, fill_send_buffer, needs, twin_params

from ext import orders_py
from processes.shared import protocol
from processes.shared.protocol import MAX_U64, Order

pytestmark = pytest.mark.timeout(120)

corders = compiled("_orders")
NEEDS_NATIVE = needs(corders, "_orders")
IMPLS = twin_params(orders_py, corders, "_orders")
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    max_examples=300)
SYMBOLS = ("AAPL", "MSFT", "GOOG")
PREFIX, CLIENT = "ma-4242-1700000000000", "ma"

# Names as a config may spell them: quotes, backslashes, the delimiter, non-ASCII.
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
prices = (st.floats(min_value=0.0, max_value=protocol.MAX_PRICE, exclude_min=True)
          | st.decimals(places=2, min_value="0.01", max_value="999999.99").map(float))
u64 = st.integers(0, MAX_U64)


def encoded(prefix: str, client: str, symbol: str, buy: bool, seq: int, qty: int, price: float,
            tick_ns: int, tick_seq: int, sent_ns: int) -> bytes:
    return protocol.encode_order(Order(
        id=f"{prefix}-{seq}", client=client, symbol=symbol, side="BUY" if buy else "SELL",
        qty=qty, price=price, tick_ns=tick_ns, tick_seq=tick_seq, sent_ns=sent_ns))


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(prefix=names, client=names, symbols=st.lists(names, min_size=1, max_size=3),
       data=st.data(), seq=st.integers(1, MAX_U64), qty=st.integers(1, protocol.MAX_I64),
       price=prices, tick_ns=u64, tick_seq=u64, sent_ns=u64)
def test_the_framer_writes_the_encoders_frame(impl: ModuleType, prefix, client, symbols, data,
                                              seq, qty, price, tick_ns, tick_seq, sent_ns):
    framer = impl.OrderFramer(protocol, prefix, client, symbols)
    j = data.draw(st.integers(0, len(symbols) - 1))
    buy = data.draw(st.booleans())
    assert framer.frame(j, buy, seq, qty, price, tick_ns, tick_seq, sent_ns) == encoded(
        prefix, client, symbols[j], buy, seq, qty, price, tick_ns, tick_seq, sent_ns)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("price", [1e-5, 5e-5, 1e16, 2.5e17, 1e300])
def test_a_price_written_with_an_exponent_is_the_encoders_too(impl, price):
    framer = impl.OrderFramer(protocol, PREFIX, CLIENT, SYMBOLS)
    assert framer.frame(1, False, 7, 3, price, 1, 2, 3) == encoded(
        PREFIX, CLIENT, "MSFT", False, 7, 3, price, 1, 2, 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_framer_needs_a_symbol_and_frames_only_its_own(impl):
    with pytest.raises(ValueError, match="at least one symbol"):
        impl.OrderFramer(protocol, PREFIX, CLIENT, ())
    framer = impl.OrderFramer(protocol, PREFIX, CLIENT, SYMBOLS)
    for j in (-1, len(SYMBOLS)):
        with pytest.raises(IndexError):
            framer.frame(j, True, 1, 1, 1.0, 0, 0, 0)


@NEEDS_NATIVE
def test_the_compiled_desk_books_every_frame_the_compiled_framer_writes(tmp_path):
    """Both ends of the order path: the Strategy's frame is the OrderManager's canonical one."""
    from processes.shared.journal import Journal

    journal = Journal(tmp_path / "j")
    journal.open()
    try:
        desk = corders.OrderDesk(protocol, frozenset(SYMBOLS), {}, journal)
        framer = corders.OrderFramer(protocol, PREFIX, CLIENT, SYMBOLS)
        for k, price in enumerate((0.01, 1.5, 173.25, 99999.99, 123456789.12)):
            frame = framer.frame(k % 3, k % 2 == 0, k + 1, 10 + k, price, 5, 6, 7)
            ack = desk.book(frame[:-1], CLIENT, b"", k + 1, 1)
            assert ack == protocol.encode_ack(f"{PREFIX}-{k + 1}", k + 1), frame
    finally:
        journal.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_framer_refuses_a_protocol_whose_frame_it_does_not_write(impl):
    class Reordered:
        Order = Order
        MESSAGE_DELIMITER = b"*"

        @staticmethod
        def encode_order(order: Order) -> bytes:
            return protocol.encode_order(order).replace(b'"qty"', b'"quantity"')

    if impl is orders_py:   # the twin is the encoder itself: nothing to disagree with
        assert impl.OrderFramer(Reordered, PREFIX, CLIENT, SYMBOLS).frame(
            0, True, 1, 1, 1.0, 0, 0, 0) == Reordered.encode_order(Order(
                id=f"{PREFIX}-1", client=CLIENT, symbol="AAPL", side="BUY", qty=1, price=1.0))
    else:
        with pytest.raises(ValueError, match="not the one this framer writes"):
            impl.OrderFramer(Reordered, PREFIX, CLIENT, SYMBOLS)


class Books:
    """A Strategy host's per-symbol lists, as the gate shares them."""

    def __init__(self, n: int = len(SYMBOLS)) -> None:
        self.positions = [0] * n
        self.pending = [0] * (2 * n)
        self.last_tick_ns = [0] * n
        self.prices: list[float | None] = [None] * n
        self.stale = [False] * n
        self.backoff_until = [0] * (2 * n)
        self.refusing: list[str | None] = ["stale"] * (2 * n)

    def lists(self) -> tuple[list, ...]:
        return (self.positions, self.pending, self.last_tick_ns, self.prices, self.stale,
                self.backoff_until, self.refusing)

    def copy(self) -> tuple[list, ...]:
        return tuple(list(x) for x in self.lists())


def gate(impl: ModuleType, books: Books, max_age_ns: int = 0):
    framer = impl.OrderFramer(protocol, PREFIX, CLIENT, SYMBOLS)
    return impl.OrderGate(framer, *books.lists(), max_age_ns)


NOW = 10_000_000_000


@pytest.mark.parametrize("impl", IMPLS)
def test_a_refused_order_does_nothing_and_says_why_in_the_hosts_order(impl):
    books = Books()
    g = gate(impl, books, max_age_ns=1_000_000)
    before = books.copy()
    assert g.send(0, True, 10, 100.0, NOW, 0, 0) == orders_py.GATE_NO_PRICE
    books.prices[0] = 100.0
    books.last_tick_ns[0] = NOW - 2_000_000   # older than max_age_ns
    assert g.send(0, True, 10, 100.0, NOW, 0, 0) == orders_py.GATE_STALE
    books.last_tick_ns[0] = 0                # a plain feed: its watch's verdict
    books.stale[0] = True
    assert g.send(0, True, 10, 100.0, NOW, 0, 0) == orders_py.GATE_STALE
    books.stale[0] = False
    books.backoff_until[1] = NOW + 1
    assert g.send(0, True, 10, 100.0, NOW, 0, 0) == orders_py.GATE_BACKOFF
    books.pending[1] = 1                     # in flight comes first
    assert g.send(0, True, 10, 100.0, NOW, 0, 0) == orders_py.GATE_PENDING
    # Nothing but what the test set: no position, count or refusal reason touched.
    assert books.copy() == ([0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0], [100.0, None, None],
                            [False] * 3, [0, NOW + 1, 0, 0, 0, 0], before[6])
    assert (g.seq, g.orders, g.unsettled, g.length, g.written) == (0, 0, 0, 0, 0)
    with pytest.raises(IndexError):
        g.send(len(SYMBOLS), True, 1, 1.0, NOW, 0, 0)
    with pytest.raises(ValueError):
        g.send(0, True, 0, 1.0, NOW, 0, 0)
    with pytest.raises(OverflowError):
        g.send(0, True, 2 ** 63, 1.0, NOW, 0, 0)
    with pytest.raises(IndexError):
        g.sent_last(True)   # nothing made


@pytest.mark.parametrize("impl", IMPLS)
def test_a_made_order_is_on_the_wire_in_the_books_and_its_order_comes_later(impl):
    books = Books()
    g = gate(impl, books)
    ours, peer = socket.socketpair()
    try:
        ours.setblocking(False)
        assert g.send(1, False, 7, 55.5, NOW, 0, 0) == f"{PREFIX}-1"   # no fd: not written
        assert (g.written, g.length) == (0, len(g.frame()))
        g.sent_last(True)   # the caller's own send wrote it after all
        g.fd = ours.fileno()
        assert g.send(2, True, 3, 12.34, NOW + 1, 11, 12) == f"{PREFIX}-2"
        assert g.written == g.length
        assert peer.recv(4096) == g.frame() == encoded(PREFIX, CLIENT, "GOOG", True, 2, 3,
                                                       12.34, 11, 12, NOW + 1)
        assert books.positions == [0, -7, 3] and books.pending == [0, 0, 1, 0, 0, 1]
        assert books.refusing == ["stale", "stale", None, "stale", "stale", None]
        assert (g.seq, g.orders, g.unsettled) == (2, 2, 2)
        made = g.take()
        assert g.unsettled == 0 and g.take() == []
        assert [(o, sent) for o, sent, _ in made] == [
            (Order(id=f"{PREFIX}-1", client=CLIENT, symbol="MSFT", side="SELL", qty=7,
                   price=55.5, sent_ns=NOW), True),
            (Order(id=f"{PREFIX}-2", client=CLIENT, symbol="GOOG", side="BUY", qty=3,
                   price=12.34, tick_ns=11, tick_seq=12, sent_ns=NOW + 1), True)]
        assert all(took >= 0 for _, _, took in made)
    finally:
        ours.close()
        peer.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_full_socket_takes_part_of_a_frame_or_none_and_the_gate_says_so(impl):
    books = Books()
    g = gate(impl, books)
    ours, peer = socket.socketpair()
    try:
        ours.setblocking(False)
        fill_send_buffer(ours)
        g.fd = ours.fileno()
        assert g.send(0, True, 1, 1.0, NOW, 0, 0) == f"{PREFIX}-1"
        assert g.written < g.length
        [(_, sent, _)] = g.take()
        assert sent is False
    finally:
        ours.close()
        peer.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_the_gates_lists_must_fit_its_symbols(impl):
    books = Books(n=2)
    framer = impl.OrderFramer(protocol, PREFIX, CLIENT, SYMBOLS)
    with pytest.raises(ValueError, match="do not match"):
        impl.OrderGate(framer, *books.lists(), 0)


# One step of a host's life around its gate: a submit, or what the host does to its own lists.
steps = st.one_of(
    st.tuples(st.just("send"), st.integers(0, len(SYMBOLS) - 1), st.booleans(),
              st.integers(1, protocol.MAX_I64), prices, st.integers(0, 3_000_000)),
    st.tuples(st.just("tick"), st.integers(0, len(SYMBOLS) - 1), prices,
              st.integers(0, 3_000_000)),
    st.tuples(st.just("acked"), st.integers(0, 2 * len(SYMBOLS) - 1)),
    st.tuples(st.just("backoff"), st.integers(0, 2 * len(SYMBOLS) - 1), st.integers(0, 2)),
    st.tuples(st.just("stale"), st.integers(0, len(SYMBOLS) - 1), st.booleans()),
    st.tuples(st.just("take")))


@NEEDS_NATIVE
@SETTINGS
@given(ops=st.lists(steps, max_size=40), max_age_ns=st.sampled_from([0, 1_000_000]))
def test_both_gates_answer_every_sequence_alike(ops, max_age_ns):
    """The compiled gate and its twin, driven through the same steps, give the same answers,
    frames and Orders and leave the host's lists the same."""
    runs = []
    for impl in (orders_py, corders):
        books = Books()
        g = gate(impl, books, max_age_ns)
        out = []
        for op in ops:
            if op[0] == "send":
                _, j, buy, qty, price, age = op
                out.append((g.send(j, buy, qty, price, NOW + age, 5, 6), g.length, g.written,
                            g.frame() if g.length else b""))
            elif op[0] == "tick":
                _, j, price, age = op
                books.prices[j], books.last_tick_ns[j] = price, NOW - age
            elif op[0] == "acked":
                books.pending[op[1]] = max(0, books.pending[op[1]] - 1)
            elif op[0] == "backoff":
                books.backoff_until[op[1]] = op[2] and NOW + op[2]
            elif op[0] == "stale":
                books.stale[op[1]] = op[2]
            else:
                out.append([(o, sent) for o, sent, _ in g.take()])
        out.append([(o, sent) for o, sent, _ in g.take()])
        runs.append((out, books.copy(), g.seq, g.orders))
    assert runs[0] == runs[1]
