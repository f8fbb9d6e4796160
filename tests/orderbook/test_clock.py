"""The OrderBook puts a Gateway's send stamps on this host's clock when the Gateway's clock is
another host's (processes/orderbook/clock.py), and leaves them alone when it is ours."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from processes.orderbook.clock import CLOCK_SAME, CLOCK_SKEW_WARN, ClockOffset
from processes.orderbook.service import OrderBookService
from processes.shared import config as config_mod
from reactor import Reactor

S = 10**9
DAY = 86_400 * S


def test_an_offset_that_cannot_be_latency_is_applied_and_followed() -> None:
    c = ClockOffset(windows=3)
    assert not c.observe(900_000) and c.applied_ns == 0            # latency: left alone
    assert not c.observe(int(CLOCK_SKEW_WARN * S)) and c.applied_ns == 0   # min is 900 us
    c.reset()
    assert c.observe(DAY + 50_000) and c.applied_ns == DAY + 50_000
    assert not c.observe(DAY + 90_000) and c.applied_ns == DAY + 50_000     # the smallest
    assert c.observe(DAY + 20_000) and c.applied_ns == DAY + 20_000
    for _ in range(3):                                             # the old minima age out
        c.observe(DAY + 70_000)
    assert c.applied_ns == DAY + 70_000 and c.estimate_ns == DAY + 70_000


def test_a_negative_offset_is_applied_too() -> None:
    c = ClockOffset(windows=2)
    assert c.observe(-DAY) and c.applied_ns == -DAY


def test_hysteresis_between_the_two_thresholds() -> None:
    between = int((CLOCK_SAME + CLOCK_SKEW_WARN) / 2 * S)
    c = ClockOffset(windows=1)
    assert not c.observe(between) and c.applied_ns == 0            # off stays off
    assert c.observe(2 * S) and c.applied_ns == 2 * S
    assert c.observe(between) and c.applied_ns == between          # on stays on (follows)
    assert c.observe(int(CLOCK_SAME * S) - 1) and c.applied_ns == 0   # on our clock again
    assert not c.observe(between) and c.applied_ns == 0


def test_windows_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClockOffset(windows=0)


class FakeGateway:
    """A listening socket in the OrderBook's reactor that sends every symbol's tick every 5 ms,
    stamped by `clock` (the Gateway's CLOCK_MONOTONIC)."""

    def __init__(self, reactor: Reactor, symbols: list[str]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.clock: Callable[[], int] = time.monotonic_ns
        self.symbols = symbols
        self.seq = 0
        reactor.add_reader(self.listener, self._accept)
        reactor.call_every(0.005, self._send)

    def _accept(self) -> None:
        self.conn, _ = self.listener.accept()

    def _send(self) -> None:
        if self.conn is None:
            return
        self.seq += 1
        frames = b"".join(b"%s,10.5,%d,%d*" % (s.encode(), self.seq, self.clock())
                          for s in self.symbols)
        try:
            self.conn.sendall(frames)
        except OSError:
            self.conn = None

    def drop(self) -> None:
        """Close the connection (the OrderBook redials), as a restarted Gateway does."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.drop()
        self.listener.close()


@pytest.fixture
def rig() -> Iterator[tuple[Reactor, FakeGateway, OrderBookService]]:
    reactor = Reactor()
    cfg = config_mod.Config()
    gw = FakeGateway(reactor, cfg.market.symbols)
    cfg.network.gateway_host = "127.0.0.1"
    cfg.network.price_port = gw.port
    cfg.market.shm_name = f"tstest_clock_{uuid.uuid4().hex[:8]}"
    ob = OrderBookService(reactor, cfg)
    try:
        ob.start()
        yield reactor, gw, ob
    finally:
        ob.close()
        gw.close()
        reactor.close()
        assert not Path(f"/dev/shm/{cfg.market.shm_name}").exists()


def run_until(reactor: Reactor, cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        reactor.run_for(0.05)


def ages_s(ob: OrderBookService) -> list[float]:
    """now - sent_ns of every slot, on this host's clock, as a reader judges a price's age."""
    assert ob.book is not None
    now = time.monotonic_ns()
    return [(now - ob.book.read_slot(i)[1]) / S for i in range(ob.book.nsymbols)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ahead", [DAY, -3 * S], ids=["gateway-a-day-ahead",
                                                       "gateway-3s-behind"])
def test_a_gateway_on_another_clock_is_written_on_ours_and_a_reconnect_remeasures(
        rig, ahead: int) -> None:
    reactor, gw, ob = rig
    gw.clock = lambda: time.monotonic_ns() + ahead
    run_until(reactor, lambda: ob.decoder.clock_offset != 0, 10, "the offset to be applied")
    # The offset is the smallest write - send: the clocks' difference plus the smallest transit.
    assert -ahead <= ob.decoder.clock_offset < -ahead + S // 10
    assert ob.stats()["clock_offset_s"] == pytest.approx(-ahead / S, abs=0.1)
    # Until the next tick, the book holds prices written on the Gateway's clock (a day in the
    # future or 3 s in the past): wait on the size of every age, not its sign.
    run_until(reactor, lambda: max(map(abs, ages_s(ob))) < 0.5, 10,
              "every price written on our clock")
    assert min(ages_s(ob)) >= 0           # never from the future: the bias makes them younger
    assert ob.latency_other_clock > 0     # the first window, on the Gateway's clock: dropped
    recorded = ob.tick_to_shm.count
    run_until(reactor, lambda: ob.tick_to_shm.count > recorded, 10, "corrected latencies")
    assert 0 <= ob.tick_to_shm.max < S // 2   # no sample measured against the other clock

    # A Gateway on our clock behind the same address (restarted on this host): re-measured.
    gw.clock = time.monotonic_ns
    reconnects = ob.dialer.reconnects
    gw.drop()
    run_until(reactor, lambda: ob.dialer.reconnects > reconnects, 10, "the redial")
    run_until(reactor, lambda: ob.decoder.clock_offset == 0, 10, "the offset to be dropped")
    run_until(reactor, lambda: max(ages_s(ob)) < 0.5, 10, "prices stamped as they come")
    assert ob.stats()["clock_offset_s"] == 0


@pytest.mark.timeout(30)
def test_a_gateway_on_our_clock_is_left_alone(rig) -> None:
    reactor, gw, ob = rig
    run_until(reactor, lambda: ob.tick_to_shm.count > 50, 10, "recorded latencies")
    run_until(reactor, lambda: ob.clock.estimate_ns is not None, 10, "an estimate")
    assert ob.decoder.clock_offset == 0 and ob.latency_other_clock == 0
    assert 0 <= ob.clock.estimate_ns < S // 2
