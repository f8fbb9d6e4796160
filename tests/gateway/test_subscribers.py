"""Slow consumers of a real in-process Gateway (processes.gateway.subscribers) on loopback
sockets with small kernel buffers: the test reads some subscribers and not others, one reactor
slice at a time, so each interleaving is set by what it reads, not by the scheduler."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from stackutil import make_config, wait_until

from processes.gateway.pacing import FAST_BATCH
from processes.gateway.service import Gateway
from reactor import Connection, Reactor

pytestmark = pytest.mark.timeout(60)

KERNEL_BUFFER = 4096   # each side's socket buffer: an unread subscriber is full at once


class Feed:
    """A Gateway on its own reactor and the raw price subscribers the test reads."""

    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        cfg = make_config(tmp_path, **{"gateway.tick_rate": 0, "gateway.news_rate": 1,
                                       "gateway.slow_client": "conflate",
                                       "gateway.socket_buffer": KERNEL_BUFFER, **overrides})
        self.reactor = Reactor()
        self.gateway = Gateway(self.reactor, cfg)
        self.port = self.gateway.start()["price_port"]
        self.socks: list[socket.socket] = []
        self.received: dict[socket.socket, int] = {}

    def subscribe(self) -> tuple[socket.socket, Connection]:
        """A subscriber, and the Gateway's Connection to it."""
        sock = socket.socket()
        self.socks.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
        sock.connect(("127.0.0.1", self.port))
        sock.setblocking(False)
        self.received[sock] = 0
        port = sock.getsockname()[1]
        found: list[Connection] = []

        def accepted() -> bool:
            self.reactor.run_for(0.002)
            found[:] = [c for c in self.gateway.price_server.connections
                        if c.sock.getpeername()[1] == port]
            return bool(found)

        wait_until(accepted, 10, interval=0, what="the Gateway to accept the subscriber")
        return sock, found[0]

    def run(self, reading: list[socket.socket], until: Callable[[], bool], what: str) -> None:
        """Reactor slices, each followed by reading everything `reading` has, until `until`."""
        def step() -> bool:
            self.reactor.run_for(0.002)
            for sock in reading:
                try:
                    while chunk := sock.recv(1 << 16):
                        self.received[sock] += len(chunk)
                except BlockingIOError:
                    pass
            return until()

        wait_until(step, 20, interval=0, what=what)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.gateway.close()
        self.reactor.close()


@pytest.fixture
def feed_factory(tmp_path: Path) -> Iterator[Callable[..., Feed]]:
    feeds: list[Feed] = []

    def make(**overrides: object) -> Feed:
        feeds.append(Feed(tmp_path, **overrides))
        return feeds[-1]

    yield make
    for feed in feeds:
        feed.close()


def test_conflate_the_reading_subscriber_gets_ticks_while_the_other_reads_nothing(feed_factory):
    """The stopped-subscriber fault at unit level. First neither reads (both queues fill and
    the feed waits); then only `slow` reads, so `fast` overflows and waits outside the broadcast
    list for its drain; then only `fast` reads, so it drains and rejoins while `slow` overflows
    in turn: from then on `fast` gets ticks and `slow` none, and the feed keeps running."""
    feed = feed_factory(**{"gateway.max_client_buffer": 64 * 1024})
    gw, prices = feed.gateway, feed.gateway.prices
    fast, fast_conn = feed.subscribe()
    slow, slow_conn = feed.subscribe()
    room = gw.tick_feed.room

    feed.run([], lambda: fast_conn.pending >= room and slow_conn.pending >= room,
             "both queues to fill while nobody reads")
    feed.run([slow], lambda: fast_conn not in prices.live, "the unread subscriber to overflow")
    assert prices.live == [slow_conn] and prices.slow == 1

    feed.run([fast], lambda: slow_conn not in prices.live and fast_conn in prices.live,
             "the read subscriber to rejoin and the other to overflow")
    assert prices.live == [fast_conn] and prices.conflated >= 1
    before, slow_before, ticks = feed.received[fast], feed.received[slow], gw.ticks
    feed.run([fast], lambda: feed.received[fast] > before + 100 * FAST_BATCH * 30,
             "the read subscriber's ticks while the other reads nothing")
    assert gw.ticks > ticks and feed.received[slow] == slow_before
    assert prices.live == [fast_conn] and slow_conn.on_drain is not None


def test_a_batch_larger_than_the_bound_strands_no_subscriber(feed_factory):
    """max_client_buffer below one batch (FAST_BATCH ticks are over 4096 bytes): the send is
    refused with nothing queued, so no drain follows it. The subscriber stays in the broadcast
    list and the feed keeps running (each such batch is dropped and counted) instead of the
    subscriber waiting outside it for a drain that never comes, the feed idle for good."""
    feed = feed_factory(**{"gateway.max_client_buffer": 4096})
    gw, prices = feed.gateway, feed.gateway.prices
    sock, conn = feed.subscribe()
    feed.run([sock], lambda: gw.ticks >= 20 * FAST_BATCH, "the feed to keep running")
    assert prices.live == [conn] and prices.slow == 0
    assert conn.pending == 0 and conn.dropped_sends >= 19
    assert prices.dropped() == conn.dropped_sends
    assert prices.oversized == conn.dropped_sends == gw.stats()["oversized_batches"]
