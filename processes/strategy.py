"""Strategy: ticks from shared memory, news from the Gateway, orders to the OrderManager.

It waits for prices without a timer and without spinning: the book's PriceReader is an IdleSource
of the reactor. Before the reactor blocks it arms the reader (announces "I am about to sleep" in the
segment); the OrderBook then rings the reader's doorbell socket, which is in the same epoll set as
the news and order sockets. One wait covers all three inputs.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ext import LayoutError, PriceReader, SharedPriceBook
from processes import config as config_mod
from processes import runtime
from processes.protocol import (
    MAX_FRAME,
    Order,
    ProtocolError,
    decode_json,
    encode_hello,
    encode_order,
    parse_news,
)
from processes.signals import (
    FLAT,
    NEUTRAL,
    POSITION_NAME,
    SIDE_NAME,
    MovingAverageCrossover,
    combine,
    order_for,
    sentiment_signal,
)
from processes.telemetry import Recorder
from reactor import Backoff, Connection, Dialer, Reactor

log = logging.getLogger("strategy")

LOGGED_PROBLEMS = 5  # bad frames/replies logged one by one; the rest only counted


class OrderClient:
    """Connection to the OrderManager: handshake, orders out, acks and rejects matched to them.

    Delivery: an order is submitted once and stays in `pending` (insertion order = creation
    order) until the OrderManager acks or rejects it. It is written at once when a session is
    up (connected and welcomed); otherwise it waits there. After every (re)connect and welcome,
    ALL pending orders are (re)sent in order with their original ids, so an order is never
    lost to an OrderManager outage, and the OrderManager's dedup by id means a resend of an order
    it had already booked is only acked again (same order_no), never booked twice.

    Counters: `unsent` = distinct orders that had to wait because no session was up when they
    were made; `resent` = orders written again after a reconnect; `refusals` = handshakes the
    OrderManager refused (bad token or version: logged, and retried with the Dialer's backoff).
    """

    def __init__(self, reactor: Reactor, host: str, port: int, on_reply, client: str = "",
                 token: str = "") -> None:
        self.on_reply = on_reply
        self.client = client
        self.token = token
        self.pending: dict[str, tuple[Order, int]] = {}   # id -> (order, position before it)
        self.welcomed = False
        self.acks = 0
        self.rejects = 0
        self.bad_replies = 0
        self.unsent = 0
        self.resent = 0
        self.refusals = 0
        self._last_refusal = ""
        # overflow="close": an order that does not fit the write buffer must not vanish; the
        # close makes us reconnect and resend everything pending instead.
        self.dialer = Dialer(reactor, host, port, on_connect=self._on_connect,
                             on_disconnect=self._on_disconnect, on_frame=self._on_frame,
                             backoff=Backoff(), max_frame=MAX_FRAME, overflow="close")

    @property
    def connected(self) -> bool:
        return self.dialer.connected and self.welcomed

    def start(self) -> None:
        self.dialer.start()

    def close(self) -> None:
        self.dialer.close()

    def submit(self, order: Order, position_before: int) -> bool:
        """Own `order` until it is acked or rejected; True if it went on the wire right now."""
        self.pending[order.id] = (order, position_before)
        log.debug("order %s created: %s %d %s @ %.2f", order.id, order.side, order.qty,
                  order.symbol, order.price)
        if self.welcomed:
            conn = self.dialer.connection
            if conn is not None and conn.send(encode_order(order)):
                return True
        self.unsent += 1
        return False

    def _on_connect(self, conn: Connection) -> None:
        log.info("connected to order manager %s; saying hello as %s", conn.peer, self.client)
        self.welcomed = False
        conn.send(encode_hello(self.client, self.token))

    def _on_disconnect(self, reason: str | None) -> None:
        self.welcomed = False
        if self.dialer.closed or (reason or "").startswith("refused"):
            return  # our own shutdown, or a refusal already logged
        log.warning("order manager lost (%s); %d orders unacknowledged, kept for resending; "
                    "reconnecting", reason or "closed by peer", len(self.pending))

    def _on_welcome(self, reply: dict) -> None:
        """Session up: resend every pending order, oldest first."""
        self.welcomed = True
        self._last_refusal = ""
        conn = self.dialer.connection
        if reply.get("kill_switch"):
            log.warning("order manager's kill switch is on: orders will be rejected")
        log.info("welcomed by order manager; resending %d unacknowledged orders",
                 len(self.pending))
        now = time.monotonic_ns()
        for order, _ in list(self.pending.values()):
            if conn is None or conn.closed:
                return  # lost again (or overflowed): the next welcome resends the rest
            order.sent_ns = now  # this attempt's send time: order -> ack measures one try
            if conn.send(encode_order(order)):
                self.resent += 1

    def _on_refused(self, reply: dict) -> None:
        reason = str(reply.get("reason"))[:300]
        self.refusals += 1
        if self.refusals <= LOGGED_PROBLEMS or reason != self._last_refusal:
            log.error("order manager REFUSED this strategy: %s; retrying with backoff "
                      "(%d orders kept)", reason, len(self.pending))
        self._last_refusal = reason
        conn = self.dialer.connection
        if conn is not None:
            conn.close(f"refused: {reason}")  # the Dialer redials with its backoff

    def _on_frame(self, frame: memoryview) -> None:
        try:
            reply = decode_json(frame)
        except ProtocolError as exc:
            self._bad_reply(str(exc))
            return
        kind = reply.get("type")
        if kind == "welcome":
            self._on_welcome(reply)
            return
        if kind == "refused":
            self._on_refused(reply)
            return
        oid = reply.get("id")
        if not isinstance(oid, str) and oid is not None:
            self._bad_reply(f"reply id is not a string: {oid!r}")
            return
        entry = self.pending.pop(oid, None)
        if kind == "ack":
            self.acks += 1
        else:
            self.rejects += 1
        self.on_reply(reply, entry)

    def _bad_reply(self, reason: str) -> None:
        self.bad_replies += 1
        if self.bad_replies <= LOGGED_PROBLEMS:
            log.warning("unreadable reply from order manager: %s", reason)


class StrategyService:
    """MA crossover + sentiment, one position per symbol, orders only on a change of side.

    An order is made once per change of side and the position moves at once (optimistically):
    the OrderClient keeps the order until the OrderManager answers, waiting out an outage and
    resending after a reconnect, so no agreeing tick has to retry it. A reject restores the
    position the order started from.
    """

    def __init__(self, reactor: Reactor, cfg: config_mod.Config) -> None:
        self.reactor = reactor
        self.cfg = cfg
        s = cfg.strategy
        self.name = s.name
        self.bullish, self.bearish, self.quantity = s.bullish, s.bearish, s.quantity
        self.book: SharedPriceBook | None = None
        self.reader: PriceReader | None = None
        self.symbols: tuple[str, ...] = ()
        self.trends: list[MovingAverageCrossover] = []
        self.sentiment: list[int | None] = []
        self.positions: list[int] = []
        self._sym_index: dict[bytes, int] = {}
        self._order_seq = 0
        self._id_prefix = f"{s.name}-{os.getpid()}-{time.time_ns() // 1_000_000}"
        self.ticks = 0
        self.decisions = 0
        self.orders = 0
        self.news = 0
        self.bad_news = 0
        self._attach_backoff = Backoff(initial=0.1, maximum=2.0)
        self.tick_to_decision = Recorder("tick_to_decision")  # Gateway send -> signal computed
        self.order_to_ack = Recorder("order_to_ack")          # our send -> OrderManager's ack
        self.tick_to_ack = Recorder("tick_to_ack")            # Gateway send -> ack received
        net = cfg.network
        self.news_dialer = Dialer(reactor, net.host, net.news_port, on_frame=self._on_news,
                                  on_connect=lambda c: log.info("connected to news %s", c.peer),
                                  on_disconnect=self._on_news_lost, backoff=Backoff(),
                                  max_frame=MAX_FRAME)
        self.orders_out = OrderClient(reactor, net.host, net.order_port, self._on_reply,
                                      s.name, config_mod.effective_token(s.token))

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        self.news_dialer.start()
        self.orders_out.start()
        attached = self._attach()
        return {"shm_name": self.cfg.market.shm_name, "attached": attached, "name": self.name}

    def close(self) -> None:
        self.news_dialer.close()
        self.orders_out.close()
        if self.reader is not None:
            self.reactor.remove_source(self)
            self.reactor.remove_reader(self.reader.fileno())
            self.reader.close()
        if self.book is not None:
            self.book.close()

    def recorders(self) -> tuple[Recorder, ...]:
        return (self.tick_to_decision, self.order_to_ack, self.tick_to_ack)

    def stats(self) -> dict[str, Any]:
        held = sum(1 for p in self.positions if p != FLAT)
        return {"ticks": self.ticks, "decisions": self.decisions, "news": self.news,
                "orders": self.orders, "acks": self.orders_out.acks,
                "rejects": self.orders_out.rejects, "unsent": self.orders_out.unsent,
                "pending": len(self.orders_out.pending), "resent": self.orders_out.resent,
                "refusals": self.orders_out.refusals, "held": held,
                "reconnects": self.news_dialer.reconnects + self.orders_out.dialer.reconnects,
                "symbols": list(self.symbols), "positions": list(self.positions),
                "sentiment": list(self.sentiment)}

    def _attach(self) -> bool:
        """Attach to the OrderBook's segment; if it is not there yet, retry with backoff."""
        try:
            book = SharedPriceBook(name=self.cfg.market.shm_name, create=False)
        except (FileNotFoundError, ValueError, LayoutError) as exc:
            # Missing, or caught mid-creation (empty file, header not written yet): retry.
            delay = self._attach_backoff.next()
            log.info("segment %s not ready (%s); retrying in %.2fs", self.cfg.market.shm_name,
                     type(exc).__name__, delay)
            self.reactor.call_later(delay, self._attach)
            return False
        self.book = book
        self.symbols = book.symbols
        n = len(self.symbols)
        s = self.cfg.strategy
        self.trends = [MovingAverageCrossover(s.short_window, s.long_window) for _ in range(n)]
        self.sentiment = [None] * n
        self.positions = [FLAT] * n
        self._sym_index = {sym.encode(): i for i, sym in enumerate(self.symbols)}
        self.reader = book.reader()
        self.reactor.add_reader(self.reader.fileno(), self.reader.drain)
        self.reactor.add_source(self)
        log.info("attached to %s: %d symbols", book.name, n)
        return True

    # --- IdleSource: the shared-memory price feed (hot path) -------------------------------------
    def poll(self) -> bool:
        reader = self.reader
        n = reader.poll()
        if not n:
            return False
        indices, prices, sent = reader.indices, reader.prices, reader.sent_ns
        tick_seqs = reader.tick_seqs
        for k in range(n):
            self._on_tick(indices[k], prices[k], sent[k], tick_seqs[k])
        self.ticks += n
        return True

    def arm(self) -> bool:
        return self.reader.arm()

    def disarm(self) -> None:
        self.reader.disarm()

    def _on_tick(self, i: int, price: float, sent_ns: int, tick_seq: int) -> None:
        trend = self.trends[i].update(price)
        signal = combine(trend, sentiment_signal(self.sentiment[i], self.bullish, self.bearish))
        if sent_ns:
            self.tick_to_decision.record(time.monotonic_ns() - sent_ns)
        self.decisions += 1
        if signal != NEUTRAL:
            self._maybe_order(i, signal, price, sent_ns, tick_seq)

    def _maybe_order(self, i: int, signal: int, price: float, tick_ns: int, tick_seq: int) -> None:
        side, qty = order_for(signal, self.positions[i], self.quantity)
        if side == NEUTRAL:
            return
        self._order_seq += 1
        order = Order(f"{self._id_prefix}-{self._order_seq}", self.symbols[i], SIDE_NAME[side],
                      qty, round(price, 2), self.name, tick_ns, tick_seq, time.monotonic_ns())
        before = self.positions[i]
        # Made once: the OrderClient owns it until acked (resent after a reconnect, waiting if
        # the OrderManager is down), so the position moves now; only a reject restores it.
        self.positions[i] = signal
        self.orders += 1
        self.orders_out.submit(order, before)

    # --- news and replies ------------------------------------------------------------------------
    def _on_news(self, frame: memoryview) -> None:
        try:
            sym, value = parse_news(frame)
        except ProtocolError as exc:
            self.bad_news += 1
            if self.bad_news <= LOGGED_PROBLEMS:
                log.warning("skipped news frame %r: %s", bytes(frame[:80]), exc)
            return
        self.news += 1
        if not self.sentiment:
            return  # not attached yet: no symbols to apply it to
        if sym is None:
            self.sentiment[:] = [value] * len(self.sentiment)
            return
        i = self._sym_index.get(sym)
        if i is not None:
            self.sentiment[i] = value

    def _on_news_lost(self, reason: str | None) -> None:
        if self.news_dialer.closed:
            return  # our own shutdown
        log.warning("news feed lost (%s); reconnecting", reason or "closed by peer")

    def _on_reply(self, reply: dict, entry: tuple[Order, int] | None) -> None:
        if entry is None:
            self.orders_out._bad_reply(f"reply for an unknown order: {str(reply)[:200]}")
            return
        order, before = entry
        if reply.get("type") == "ack":
            now = time.monotonic_ns()
            self.order_to_ack.record(now - order.sent_ns)
            if order.tick_ns:
                self.tick_to_ack.record(now - order.tick_ns)
            log.debug("order %s acked as #%s", order.id, reply.get("order_no"))
            return
        # Rejected: the position we assumed never happened.
        i = self.symbols.index(order.symbol)
        self.positions[i] = before
        log.warning("order %s %s %d %s rejected: %s (position back to %s)", order.id, order.side,
                    order.qty, order.symbol, reply.get("reason"), POSITION_NAME[before])


def run(cfg: config_mod.Config, ready: Any = None, supervised: bool = False) -> int:
    return runtime.serve("strategy", cfg, lambda r: StrategyService(r, cfg), ready,
                         supervised=supervised)


def main(argv: list[str] | None = None) -> int:
    cfg = runtime.cli("strategy", "MA-crossover + sentiment strategy.", ("strategy",), argv,
                      extra=(("network", "news_port"), ("network", "order_port")))
    return 0 if cfg is None else run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
