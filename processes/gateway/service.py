"""Gateway: TCP server publishing a random-walk price stream and a news-sentiment stream.

Ticks are paced by a timer and sent in batches, one send() per batch per client: a send per tick
costs a syscall each and caps the feed near 0.2 M ticks/s on this class of machine. Each client's
pending output is bounded (reactor.Connection), and so is its kernel send buffer
(gateway.socket_buffer): a client that cannot keep up loses ticks (counted), gets only the latest
price per symbol once it reads again, or is closed (processes.gateway.subscribers), so it can never grow
the Gateway's memory nor delay the other clients. Clients must send nothing; one that does is
closed.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from ext import TickEncoder
from processes.gateway.replay import CsvPrices, ReplayFeed, log_report
from processes.gateway.subscribers import Subscribers
from processes.shared import config as config_mod
from processes.shared import runtime
from processes.shared.protocol import format_news
from reactor import Connection, Reactor, Server

log = logging.getLogger("gateway")

MAX_BATCH = 4096          # items formatted into one send; bounds the burst after a stall
FAST_BATCH = 256          # items per loop turn when the rate is 0 ("as fast as clients drain")
MIN_PERIOD = 0.001        # pacing timer period floor; higher rates batch several ticks per period


class Sentiment:
    """Per-symbol sentiment, an AR(1) walk around 50 that regularly crosses both thresholds."""

    __slots__ = ("symbols", "values", "rng")

    def __init__(self, symbols: list[str], rng: random.Random) -> None:
        self.symbols = [s.encode() for s in symbols]
        self.values = [50] * len(symbols)
        self.rng = rng

    def batch(self, n: int) -> bytes:
        """n updates, each for a random symbol, as one buffer of frames."""
        out = []
        for _ in range(n):
            i = self.rng.randrange(len(self.symbols))
            value = 50.0 + 0.6 * (self.values[i] - 50) + self.rng.gauss(0.0, 18.0)
            self.values[i] = v = max(0, min(100, round(value)))
            out.append(format_news(self.symbols[i], v))
        return b"".join(out)

    def snapshot(self) -> bytes:
        return b"".join(format_news(s, v) for s, v in zip(self.symbols, self.values))


class PacedFeed:
    """Emit `rate` items per second in timer-driven batches; rate 0 = as fast as clients drain.

    Paced: a timer every max(1/rate, 1 ms) emits the items due since start, so rates above
    1 kHz batch several items per send; after a stall it skips ahead instead of bursting.
    Unpaced: one FAST_BATCH per loop turn while some client has room, idle when none does.
    """

    def __init__(self, reactor: Reactor, rate: float, emit: Callable[[int], None],
                 clients: list[Connection], room: int) -> None:
        self.reactor = reactor
        self.rate = rate
        self.emit = emit
        self.clients = clients
        self.room = room
        self._t0 = 0.0
        self._done = 0
        self._scheduled = False

    def start(self) -> None:
        if self.rate > 0:
            self._t0 = self.reactor.time()
            self.reactor.call_every(max(1.0 / self.rate, MIN_PERIOD), self._paced)
        else:
            self.wake()

    def wake(self) -> None:
        """A client arrived: an unpaced feed that went idle starts again."""
        if self.rate <= 0 and not self._scheduled:
            self._scheduled = True
            self.reactor.call_soon(self._pump)

    def _paced(self) -> None:
        due = int((self.reactor.time() - self._t0) * self.rate)
        n = due - self._done
        if n <= 0:
            return
        if n > MAX_BATCH:
            n = MAX_BATCH
            self._done = due
        else:
            self._done += n
        self.emit(n)

    def _pump(self) -> None:
        self._scheduled = False
        if not self.clients:
            return  # nobody listening: idle until wake()
        if any(c.pending < self.room for c in self.clients):
            self.emit(FAST_BATCH)
            self.wake()
        else:
            self._scheduled = True
            self.reactor.call_later(MIN_PERIOD, self._pump)


class Gateway:
    """Two servers (prices, news) and the paced feeds that fill them."""

    def __init__(self, reactor: Reactor, cfg: config_mod.Config) -> None:
        self.reactor = reactor
        self.cfg = cfg
        g = cfg.gateway
        rng = random.Random(g.seed or None)
        # The price source: the random walk, or a recorded file (processes.gateway.replay) with the same
        # batch/snapshot interface. A bad file fails the start-up here, naming gateway.csv.
        self.replay: CsvPrices | None = None
        if g.csv:
            self.replay, self.replay_report = CsvPrices.from_file(g.csv, cfg.market.symbols,
                                                                  g.csv_loop)
            self.walk: TickEncoder | CsvPrices = self.replay
        else:
            # ext.TickEncoder: the random walk + formatting in C (~30 ns a tick vs ~1 us in
            # Python; ext.wire_py.TickEncoder is its pure-Python twin).
            self.walk = TickEncoder(cfg.market.symbols, g.volatility, g.seed)
        self.news = Sentiment(cfg.market.symbols, rng)
        self.plain = g.plain
        self.news_batches = 0
        self.prices = Subscribers(
            "price", g.slow_client, lambda: self.walk.snapshot(time.monotonic_ns(), self.plain),
            lambda: self.batches, lambda: self.tick_feed.wake(), log)
        self.news_subs = Subscribers("news", g.slow_client, self.news.snapshot,
                                     lambda: self.news_batches, lambda: self.news_feed.wake(), log)
        # The broadcast lists: clients that get every batch (conflating slow ones wait outside).
        self.price_clients: list[Connection] = self.prices.live
        self.news_clients: list[Connection] = self.news_subs.live
        self.price_server: Server | None = None
        self.news_server: Server | None = None
        self.ticks = 0               # ticks generated
        self.ticks_sent = 0          # tick deliveries (ticks x clients that took them)
        self.news_sent = 0
        self.batches = 0
        room = g.max_client_buffer // 2
        if self.replay is not None:
            self.tick_feed: PacedFeed | ReplayFeed = ReplayFeed(
                reactor, self.replay, g.csv_speed, self._broadcast, self.price_clients, room,
                on_done=lambda: log.info("replay of %s finished: %d rows sent", g.csv,
                                         self.ticks))
        else:
            self.tick_feed = PacedFeed(reactor, g.tick_rate, self._broadcast, self.price_clients,
                                       room)
        self.news_feed = PacedFeed(reactor, g.news_rate, self._broadcast_news, self.news_clients,
                                   room)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        net, g = self.cfg.network, self.cfg.gateway
        # "conflate" is the Gateway's policy on top of a Connection that drops what does not fit.
        overflow = "drop" if g.slow_client == "conflate" else g.slow_client
        conn_opts = {"max_write_buffer": g.max_client_buffer, "overflow": overflow,
                     "max_frame": 256}
        self.price_server = Server(self.reactor, net.host, net.price_port,
                                   self._on_price_client, **conn_opts)
        self.news_server = Server(self.reactor, net.host, net.news_port,
                                  self._on_news_client, **conn_opts)
        self.tick_feed.start()
        self.news_feed.start()
        if self.replay is not None:
            log_report(log, self.replay_report)
        return {"price_port": self.price_server.port, "news_port": self.news_server.port,
                "symbols": len(self.walk.symbols), "tick_rate": g.tick_rate,
                "source": g.csv or "random walk"}

    def close(self) -> None:
        for server in (self.price_server, self.news_server):
            if server is not None:
                server.close()

    def stats(self) -> dict[str, Any]:
        p, n = self.prices, self.news_subs
        out = {"ticks": self.ticks, "deliveries": self.ticks_sent,
               "price_clients": len(p), "news_clients": len(n), "news": self.news_sent,
               "dropped_batches": p.dropped(), "slow_clients": p.slow + n.slow,
               "slow_events": p.slow_events + n.slow_events, "conflated": p.conflated,
               "conflated_batches": p.conflated_batches,
               "bad_clients": p.bad_clients + n.bad_clients}
        if self.replay is not None:
            out.update(self.replay.stats())
        return out

    # --- clients ---------------------------------------------------------------------------------
    def _on_price_client(self, conn: Connection) -> None:
        self._set_send_buffer(conn)
        conn.on_close = self._on_price_close
        self.prices.add(conn)
        conn.send(self.walk.snapshot(time.monotonic_ns(), self.plain))
        log.info("price client %s connected (%d now)", conn.peer, len(self.prices))
        self.tick_feed.wake()

    def _on_news_client(self, conn: Connection) -> None:
        self._set_send_buffer(conn)
        conn.on_close = self._on_news_close
        self.news_subs.add(conn)
        conn.send(self.news.snapshot())
        log.info("news client %s connected (%d now)", conn.peer, len(self.news_subs))
        self.news_feed.wake()

    def _set_send_buffer(self, conn: Connection) -> None:
        """Cap the kernel's send buffer: left to autotuning it grows to megabytes for a fast
        stream, and every tick then queues behind all of them (tens of ms at full rate)."""
        size = self.cfg.gateway.socket_buffer
        if size:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError as exc:
                log.warning("gateway.socket_buffer %d not applied to %s: %s", size, conn.peer,
                            exc)

    def _on_price_close(self, conn: Connection, reason: str | None) -> None:
        self.prices.remove(conn)
        log.info("price client %s gone (%s); %d dropped batches", conn.peer,
                 reason or "closed by peer", conn.dropped_sends)

    def _on_news_close(self, conn: Connection, reason: str | None) -> None:
        self.news_subs.remove(conn)
        log.info("news client %s gone (%s)", conn.peer, reason or "closed by peer")

    # --- feeds (hot path) ------------------------------------------------------------------------
    def _broadcast(self, n: int) -> None:
        data = self.walk.batch(n, time.monotonic_ns(), self.plain)
        self.ticks += n
        self.batches += 1
        sent = 0
        # A snapshot: a failing send closes its client, which removes it from the list, or
        # makes it a slow client (only then is lagging() called).
        for conn in tuple(self.price_clients):
            if conn.send(data):
                sent += n
            else:
                self.prices.lagging(conn)
        self.ticks_sent += sent

    def _broadcast_news(self, n: int) -> None:
        data = self.news.batch(n)
        self.news_sent += n
        self.news_batches += 1
        for conn in tuple(self.news_clients):
            if not conn.send(data):
                self.news_subs.lagging(conn)


def run(cfg: config_mod.Config, ready: Any = None, supervised: bool = False) -> int:
    return runtime.serve("gateway", cfg, lambda reactor: Gateway(reactor, cfg), ready,
                         supervised=supervised)


def main(argv: list[str] | None = None) -> int:
    cfg = runtime.cli("gateway", "Price and news feed server.", ("gateway",), argv,
                      extra=(("network", "price_port"), ("network", "news_port")))
    return 0 if cfg is None else run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
