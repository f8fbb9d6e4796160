"""Gateway: TCP server publishing a price stream and a news-sentiment stream.

The streams are a random walk and a random sentiment, or a recorded file replayed at its own pace
(processes.gateway.replay: prices, and news when the file has news rows). Items are paced by
processes.gateway.pacing and sent in batches, one send() per batch per client: a send per tick
costs a syscall each and caps the feed near 0.2 M ticks/s on this class of machine. Each client's
pending output is bounded (reactor.Connection), and so is its kernel send buffer
(gateway.socket_buffer): a client that cannot keep up loses ticks (counted), gets only the latest
price per symbol once it reads again, or is closed (processes.gateway.subscribers), so it can
never grow the Gateway's memory nor delay the other clients. Clients must send nothing; one that
does is closed.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from typing import Any

from ext import TickEncoder
from processes.gateway.pacing import Clock, Pacer, RateSchedule
from processes.gateway.replay import CsvMarket, CsvNews, CsvPrices
from processes.gateway.subscribers import Subscribers
from processes.shared import config as config_mod
from processes.shared import exposure, runtime
from processes.shared.market_file import log_report
from processes.shared.protocol import format_news
from reactor import Connection, Reactor, Server

log = logging.getLogger("gateway")


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


class Gateway:
    """Two servers (prices, news) and the paced feeds that fill them."""

    def __init__(self, reactor: Reactor, cfg: config_mod.Config) -> None:
        self.reactor = reactor
        self.cfg = cfg
        g = cfg.gateway
        rng = random.Random(g.seed or None)
        # The sources: the random walk and sentiment, or a recorded file (processes.gateway.replay)
        # with the same batch/snapshot interfaces. A bad file fails the start-up here, naming
        # gateway.csv.
        self.replay: CsvPrices | None = None
        self.replay_news: CsvNews | None = None
        market: CsvMarket | None = None
        if g.csv:
            market = CsvMarket.from_file(g.csv, cfg.market.symbols, g.csv_loop)
            self.replay, self.replay_news = market.prices, market.news
            self.replay_report = market.report
            self.walk: TickEncoder | CsvPrices = self.replay
        else:
            # ext.TickEncoder: the random walk + formatting in C (~30 ns a tick vs ~1 us in
            # Python; ext.wire_py.TickEncoder is its pure-Python twin).
            self.walk = TickEncoder(cfg.market.symbols, g.volatility, g.seed)
        self.news: Sentiment | CsvNews = self.replay_news or Sentiment(cfg.market.symbols, rng)
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
        if market is not None:
            # One clock for the file's prices and news, started by the replay start rule.
            clock = Clock(reactor)
            self.tick_feed = Pacer(
                reactor, market.prices.schedule(g.csv_speed), g.csv_speed > 0, self._broadcast,
                self.price_clients, room, self._replay_ready, clock,
                on_done=lambda: log.info("replay of %s finished: %d rows sent", g.csv,
                                         self.ticks))
        else:
            self.tick_feed = Pacer(reactor, RateSchedule(g.tick_rate), g.tick_rate > 0,
                                   self._broadcast, self.price_clients, room)
        if market is not None and market.news is not None:
            self.news_feed = Pacer(
                reactor, market.news.schedule(g.csv_speed), g.csv_speed > 0,
                self._broadcast_news, self.news_clients, room, self._replay_ready, clock,
                on_done=lambda: log.info("replay of %s finished: %d news rows sent", g.csv,
                                         self.news_sent))
        else:
            self.news_feed = Pacer(reactor, RateSchedule(g.news_rate), g.news_rate > 0,
                                   self._broadcast_news, self.news_clients, room)

    def _replay_ready(self) -> bool:
        """The replay start rule: a price subscriber, and a news subscriber if the file has news
        (processes.gateway.replay)."""
        return len(self.prices) > 0 and (self.replay_news is None or len(self.news_subs) > 0)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        net, g = self.cfg.network, self.cfg.gateway
        # "conflate" is the Gateway's policy on top of a Connection that drops what does not fit.
        overflow = "drop" if g.slow_client == "conflate" else g.slow_client
        conn_opts = {"max_write_buffer": g.max_client_buffer, "overflow": overflow,
                     "max_frame": 256}
        exposure.check_gateway(self.cfg, log)
        self.price_server = Server(self.reactor, g.listen, net.price_port,
                                   self._on_price_client, **conn_opts)
        self.news_server = Server(self.reactor, g.listen, net.news_port,
                                  self._on_news_client, **conn_opts)
        self.tick_feed.start()
        self.news_feed.start()
        if self.replay is not None:
            log_report(log, self.replay_report)
        # The pace that applies: tick_rate drives the random walk only; a CSV has its own.
        pace: dict[str, Any] = ({"csv": g.csv, "csv_speed": g.csv_speed, "csv_loop": g.csv_loop}
                                if g.csv else {"tick_rate": g.tick_rate, "source": "random walk"})
        return {"price_port": self.price_server.port, "news_port": self.news_server.port,
                "symbols": len(self.walk.symbols), **pace}

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
               "oversized_batches": p.oversized + n.oversized,
               "bad_clients": p.bad_clients + n.bad_clients}
        if self.replay is not None:
            out.update(self.replay.stats())
        if self.replay_news is not None:
            out.update(self.replay_news.stats())
        return out

    # --- clients ---------------------------------------------------------------------------------
    def _on_price_client(self, conn: Connection) -> None:
        self._set_send_buffer(conn)
        conn.on_close = self._on_price_close
        self.prices.add(conn)
        conn.send(self.walk.snapshot(time.monotonic_ns(), self.plain))
        log.info("price client %s connected (%d now)", conn.peer, len(self.prices))
        self._wake_feeds()

    def _on_news_client(self, conn: Connection) -> None:
        self._set_send_buffer(conn)
        conn.on_close = self._on_news_close
        self.news_subs.add(conn)
        conn.send(self.news.snapshot())
        log.info("news client %s connected (%d now)", conn.peer, len(self.news_subs))
        self._wake_feeds()

    def _wake_feeds(self) -> None:
        """A client arrived: either feed may start (a replay with news waits for both kinds of
        subscriber) or, unpaced, resume."""
        self.tick_feed.wake()
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
