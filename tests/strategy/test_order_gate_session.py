"""The Strategy host's OrderGate on its order socket through a session's life, on real loopback
TCP: a peer plays the OrderManager's handshake, takes the socket's bytes, resets it and is
dialled again. Each test runs with the compiled gate and its twin (ext.orders_py)."""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Iterator
from types import ModuleType

import pytest
from stackutil import make_config, recv_frames, wait_until
from twinutil import compiled, needs, twin_params

from ext import orders_py
from processes.shared.protocol import (
    MAX_I64,
    Order,
    Reject,
    decode_hello,
    decode_order,
    encode_ack,
    encode_order,
    encode_welcome,
)
from processes.strategy import host as host_mod
from processes.strategy.host import StrategyHost
from reactor import Reactor

pytestmark = pytest.mark.timeout(60)

corders = compiled("_orders")
IMPLS = twin_params(orders_py, corders, "_orders")
SYMBOLS = frozenset({"AAPL", "MSFT"})
KERNEL_BUFFER = 4096


class Venue:
    """A listening peer in the OrderManager's place: accepts, reads the hello, welcomes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        # Inherited by every accepted socket: a peer that does not read is full at once.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.peers: list[socket.socket] = []

    def welcome(self, host: StrategyHost, reactor: Reactor) -> socket.socket:
        """The next connection of `host`'s OrderClient, welcomed, its gate lent the socket."""
        found: list[socket.socket] = []

        def accepted() -> bool:
            reactor.run_for(0.005)
            try:
                found.append(self.listener.accept()[0])
            except BlockingIOError:
                return False
            return True

        wait_until(accepted, 10, interval=0, what="the order client to dial")
        peer = found[0]
        self.peers.append(peer)
        peer.setblocking(False)
        got = bytearray()

        def hello_read() -> bool:   # the client says hello once its reactor sees the connect
            try:
                got.extend(peer.recv(4096))
            except BlockingIOError:
                pass
            return b"*" in got

        pump(reactor, hello_read, "the hello")
        hello, rest = bytes(got).split(b"*", 1)
        assert decode_hello(hello).client == host.name and rest == b""
        peer.setblocking(True)
        peer.sendall(encode_welcome(host.name))
        out = host.orders_out
        pump(reactor, lambda: out.connected and host._gate.fd >= 0, "the welcome")
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.listener.close()


def pump(reactor: Reactor, until, what: str) -> None:
    def step() -> bool:
        reactor.run_for(0.005)
        return until()

    wait_until(step, 10, interval=0, what=what)


@pytest.fixture
def stack(tmp_path, monkeypatch) -> Iterator:
    """make(impl) -> (host, reactor, venue): a StrategyHost whose gate is `impl`'s, its order
    client dialling the venue (no price book, no news: max_price_age 0 needs no tick)."""
    made: list[tuple[StrategyHost, Reactor, Venue]] = []

    def make(impl: ModuleType, start: bool = True) -> tuple[StrategyHost, Reactor, Venue]:
        monkeypatch.setattr(host_mod, "OrderGate", impl.OrderGate)
        monkeypatch.setattr(host_mod, "OrderFramer", impl.OrderFramer)
        venue = Venue()
        cfg = make_config(tmp_path, **{"market.symbols": "AAPL,MSFT",
                                       "strategy.max_price_age": 0,
                                       "network.order_port": venue.port})
        reactor = Reactor()
        host = StrategyHost(reactor, cfg)
        assert type(host._gate) is impl.OrderGate
        made.append((host, reactor, venue))
        if start:
            host.orders_out.start()
        return host, reactor, venue

    yield make
    for host, reactor, venue in made:
        host.close()
        reactor.close()
        venue.close()


def ids(frames: list[bytes]) -> list[str]:
    return [decode_order(f, SYMBOLS).id for f in frames]


def counts(host: StrategyHost) -> tuple[int, ...]:
    st = host.stats()
    return st["orders"], st["acks"], st["pending"], st["unsent"], st["resent"]


@pytest.mark.parametrize("impl", IMPLS)
def test_a_reset_under_the_gate_keeps_the_order_and_the_next_session_resends_in_order(stack,
                                                                                      impl):
    """The peer resets the connection while the gate holds its socket: the gate's send fails,
    the connection's own send fails and closes it; the order is kept (unsent), the gate lets
    go of the closed socket, and the next session resends both orders, oldest first, before
    the gate writes again."""
    host, reactor, venue = stack(impl)
    gate, out = host._gate, host.orders_out
    peer = venue.welcome(host, reactor)
    conn = out.dialer.connection
    assert gate.fd == conn.sock.fileno()

    first = host.submit("AAPL", "BUY", 10, 100.0)
    assert gate.written == gate.length   # the gate's own send wrote it whole
    assert ids(recv_frames(peer, 1)) == [first]

    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()   # a reset, which the client's reactor has not read yet
    wait_until(lambda: select.select([conn.sock], [], [], 0)[0], 5, what="the reset")
    second = host.submit("MSFT", "SELL", 5, 50.0)
    assert second is not None and conn.closed and not out.connected and gate.fd == -1
    assert counts(host) == (2, 0, 2, 1, 0)

    peer = venue.welcome(host, reactor)
    assert gate.fd == out.dialer.connection.sock.fileno()
    assert ids(recv_frames(peer, 2)) == [first, second]
    third = host.submit("AAPL", "SELL", 1, 101.0)
    assert gate.written == gate.length
    assert ids(recv_frames(peer, 1)) == [third]
    peer.sendall(encode_ack(first, 1) + encode_ack(second, 2) + encode_ack(third, 3))
    pump(reactor, lambda: not out.pending, "the acks")
    assert counts(host) == (3, 3, 0, 1, 2) and out.bad_replies == 0
    assert host.positions == [9, -5]


@pytest.mark.parametrize("impl", IMPLS)
def test_queued_bytes_keep_the_gate_off_the_socket_until_they_drain(stack, impl):
    """While the connection has bytes queued, the gate does not write: its order is queued
    behind them (and counts as sent); once they drain the gate writes again."""
    host, reactor, venue = stack(impl)
    gate, out = host._gate, host.orders_out
    peer = venue.welcome(host, reactor)
    conn = out.dialer.connection
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER)
    filler = [encode_order(Order(id=f"filler-{k}", client=host.name, symbol="MSFT", side="BUY",
                                 qty=1, price=1.0)) for k in range(2000)]
    for frame in filler:
        assert conn.send(frame)
    assert conn.pending and gate.fd == -1

    queued = host.submit("AAPL", "BUY", 10, 100.0)
    assert gate.written == 0 and conn.pending and gate.fd == -1
    peer.setblocking(False)
    got = bytearray()

    def read() -> None:
        try:
            while chunk := peer.recv(1 << 16):
                got.extend(chunk)
        except BlockingIOError:
            pass

    pump(reactor, lambda: read() or not conn.pending, "the queue to drain")
    assert gate.fd == conn.sock.fileno()
    direct = host.submit("MSFT", "SELL", 5, 50.0)
    assert gate.written == gate.length
    pump(reactor, lambda: read() or got.count(b"*") == len(filler) + 2, "every frame")
    assert ids(bytes(got).split(b"*")[:-1]) == [f"filler-{k}" for k in range(2000)] + [
        queued, direct]
    assert counts(host) == (2, 0, 2, 0, 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_snapshot_counts_the_orders_made_without_a_session(stack, impl):
    """No OrderManager yet: each order waits (unsent); a snapshot taken before anything
    settles the gate's orders says so, in the same snapshot as `pending`."""
    host, _, _ = stack(impl, start=False)
    host.submit("AAPL", "BUY", 10, 100.0)
    assert counts(host) == (1, 0, 1, 1, 0)
    host.submit("MSFT", "BUY", 10, 100.0)
    assert counts(host) == (2, 0, 2, 2, 0)


@needs(corders, "_orders")
def test_an_order_the_framer_does_not_write_after_one_that_waits(stack):
    """A price the compiled framer does not write (the host encodes that Order) right after an
    order the gate could not send: the second is made once, the first is not sent again."""
    host, _, _ = stack(corders, start=False)
    first = host.submit("AAPL", "BUY", 10, 100.0)
    second = host.submit("MSFT", "BUY", 1, 1e17)   # the OrderManager rejects it, not the host
    assert list(host.orders_out.pending) == [first, second]
    assert counts(host) == (2, 0, 2, 2, 0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("qty", [MAX_I64 + 1, 2 ** 64])
def test_a_qty_past_the_protocols_range_leaves_the_position_whole(stack, impl, qty):
    """The OrderManager rejects a qty over MAX_I64; whether the host refuses it first or the
    reject comes back, the position ends where it started, with either gate."""
    host, _, _ = stack(impl, start=False)
    try:
        oid = host.submit("AAPL", "BUY", qty, 100.0)
    except ValueError:
        oid = None
    if oid is not None:
        host._on_reply(Reject(oid, "qty out of range"), host.orders_out.pending.pop(oid))
    assert host.position("AAPL") == 0
