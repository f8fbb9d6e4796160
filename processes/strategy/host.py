"""Strategy: ticks from shared memory, news from the Gateway, orders to the OrderManager.

It waits for prices without a timer and without spinning: the book's PriceReader is an IdleSource
of the reactor. Before the reactor blocks it arms the reader (announces "I am about to sleep" in the
segment); the OrderBook then rings the reader's doorbell socket, which is in the same epoll set as
the news and order sockets. One wait covers all three inputs.

Stale prices and a dead OrderBook are noticed by a timer (_watch, every WATCH_INTERVAL), never per
tick: no order is made on a price older than `strategy.max_price_age`, and when the OrderBook dies
and a new one replaces its segment, the Strategy re-attaches to the new segment by itself, keeping
its positions.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ext import LayoutError, PriceReader, SharedPriceBook, layout
from processes.shared import config as config_mod
from processes.shared import runtime
from processes.shared.protocol import (
    MAX_FRAME,
    Order,
    ProtocolError,
    decode_ack,
    decode_json,
    encode_hello,
    encode_order,
    parse_news,
)
from processes.shared.telemetry import Recorder
from processes.strategy.signals import (
    FLAT,
    NEUTRAL,
    POSITION_NAME,
    SIDE_NAME,
    MovingAverageCrossover,
    combine,
    order_for,
    sentiment_signal,
)
from reactor import Backoff, Connection, Dialer, Reactor

log = logging.getLogger("strategy")

LOGGED_PROBLEMS = 5  # bad frames/replies logged one by one; the rest only counted
WATCH_INTERVAL = 0.2   # seconds between staleness and segment checks (a timer, not per tick)
BOOK_DEAD_S = 2.0      # an OrderBook heartbeat (every 0.5 s) older than this: it is dead or hung
LOGGED_TRANSITIONS = 100  # stale/fresh lines logged; then only counted (a flapping feed)


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
        fast = decode_ack(frame)   # the common case, without the json module
        if fast is not None:
            entry = self.pending.pop(fast[0], None)
            if entry is None:
                self._bad_reply(f"ack for an unknown order {fast[0]!r}")
                return
            self.acks += 1
            self.on_reply({"type": "ack", "id": fast[0], "order_no": fast[1]}, entry)
            return
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
        if entry is None:  # not ours, or answered already: counted as a bad reply, not an ack
            self._bad_reply(f"reply for an unknown order: {str(reply)[:200]}")
            return
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
        p = {"short_window": 5, "long_window": 20, "bullish": 60, "bearish": 40, "quantity": 10,
             **s.params}
        self._params = {k: int(v) for k, v in p.items()}
        self.bullish, self.bearish, self.quantity = (
            self._params[k] for k in ("bullish", "bearish", "quantity"))
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
        self._attach_failures = 0         # in a row: only the first of an outage is logged
        self._attach_timer: Any = None
        # Staleness (see _watch): per-symbol state from the timer, and the tick-age rule.
        self.max_age_ns = int(s.max_price_age * 1e9)
        self.stale: list[bool] = []
        self.stale_skips = 0               # orders not made because the price was too old
        self.stale_transitions = 0
        self.book_dead = False             # the OrderBook's heartbeat stopped
        self.reattaches = 0
        self._identity: tuple[int, int] = (0, 0)   # (owner_pid, created_ns) of our segment
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
        self.reactor.call_every(WATCH_INTERVAL, self._watch)
        return {"shm_name": self.cfg.market.shm_name, "attached": attached, "name": self.name,
                "max_price_age": self.cfg.strategy.max_price_age}

    def close(self) -> None:
        self.news_dialer.close()
        self.orders_out.close()
        self._detach()

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
                "bad_news": self.bad_news, "bad_replies": self.orders_out.bad_replies,
                "stale_symbols": sum(self.stale), "stale_skips": self.stale_skips,
                "book_dead": self.book_dead, "attached": self.book is not None,
                "reattaches": self.reattaches,
                "symbols": list(self.symbols), "positions": list(self.positions),
                "sentiment": list(self.sentiment)}

    def _attach(self) -> bool:
        """Attach to the OrderBook's segment; if it is not there yet, retry with backoff."""
        self._attach_timer = None
        if self.book is not None:
            return True
        name = self.cfg.market.shm_name
        try:
            book = SharedPriceBook(name=name, create=False)
        except (FileNotFoundError, ValueError, LayoutError) as exc:
            # Missing, or caught mid-creation (empty file, header not written yet): retry.
            delay = self._attach_backoff.next()
            self._attach_failures += 1
            (log.info if self._attach_failures == 1 else log.debug)(
                "segment %s not ready (%s); retrying in %.2fs", name, type(exc).__name__, delay)
            self._attach_timer = self.reactor.call_later(delay, self._attach)
            return False
        self._attach_backoff.reset()
        self._attach_failures = 0
        self._adopt(book)
        return True

    def _adopt(self, book: SharedPriceBook) -> None:
        """Use `book`; on a re-attach, every symbol keeps its position, sentiment and window."""
        old = {sym: i for i, sym in enumerate(self.symbols)}
        symbols = book.symbols

        def carried(values: list, make) -> list:
            return [values[old[sym]] if sym in old else make() for sym in symbols]

        self.trends = carried(self.trends,
                              lambda: MovingAverageCrossover(self._params["short_window"],
                                                             self._params["long_window"]))
        self.sentiment = carried(self.sentiment, lambda: None)
        self.positions = carried(self.positions, lambda: FLAT)
        self.stale = carried(self.stale, lambda: False)
        self.book = book
        self.symbols = symbols
        self._sym_index = {sym.encode(): i for i, sym in enumerate(symbols)}
        head = book.header()
        self._identity = (head["owner_pid"], head["created_ns"])
        self.reader = book.reader()
        self.reactor.add_reader(self.reader.fileno(), self.reader.drain)
        self.reactor.add_source(self)
        if old:
            self.reattaches += 1
            held = sum(1 for p in self.positions if p != FLAT)
            log.warning("re-attached to %s (OrderBook pid %d): %d symbols, %d positions kept",
                        book.name, head["owner_pid"], len(symbols), held)
        else:
            log.info("attached to %s: %d symbols", book.name, len(symbols))

    def _detach(self) -> None:
        """Let go of the segment (reader entry, doorbell, mapping); the state stays."""
        if self._attach_timer is not None:
            self._attach_timer.cancel()
            self._attach_timer = None
        if self.reader is not None:
            self.reactor.remove_source(self)
            self.reactor.remove_reader(self.reader.fileno())
            self.reader.close()
            self.reader = None
        if self.book is not None:
            self.book.close()
            self.book = None

    # --- staleness and the OrderBook's liveness (timer, off the hot path) ------------------------
    def _watch(self) -> None:
        """Every WATCH_INTERVAL: is our segment still the one at the name, is its OrderBook
        alive (heartbeat), and which symbols have a price younger than max_price_age?

        A segment that vanished or was replaced (a restarted OrderBook reclaims the name and
        creates a new one; ours is then unlinked and never written again) is let go and the new
        one attached. The per-symbol state is for stats() and one log line per transition; the
        order path itself checks the age of the very tick it acts on (_maybe_order).
        """
        if self.book is None:
            return  # between segments: _attach is retrying
        name = self.cfg.market.shm_name
        probe = layout.probe_segment(name)
        if probe is None or (probe.owner_pid, probe.created_ns) != self._identity:
            why = "vanished" if probe is None else "was replaced by a new OrderBook"
            log.warning("price book %s %s; detaching and re-attaching with backoff "
                        "(positions kept)", name, why)
            self._detach()
            self._set_stale([True] * len(self.stale), "no price book")
            self._attach()
            return
        now = time.monotonic_ns()
        silent = (now - probe.heartbeat_ns) / 1e9
        dead = silent > BOOK_DEAD_S
        if dead != self.book_dead:
            self.book_dead = dead
            if dead:
                log.error("OrderBook (pid %d) silent for %.1fs: its prices are stale; not "
                          "trading until it is back", probe.owner_pid, silent)
            else:
                log.warning("OrderBook (pid %d) heartbeat is back", probe.owner_pid)
        if dead:
            self._set_stale([True] * len(self.stale), "OrderBook silent")
            return
        book, max_age = self.book, self.max_age_ns
        stale = list(self.stale)
        for i in range(len(stale)):
            if book.seq(i) & 1:
                continue  # mid-write (or its writer died mid-write): keep the last verdict
            write_ns = book.read_slot(i)[3]
            stale[i] = bool(max_age) and (not write_ns or now - write_ns > max_age)
        self._set_stale(stale, f"older than {max_age / 1e9:g}s")

    def _set_stale(self, stale: list[bool], why: str) -> None:
        went = [s for s, old, new in zip(self.symbols, self.stale, stale) if new and not old]
        back = [s for s, old, new in zip(self.symbols, self.stale, stale) if old and not new]
        self.stale = stale
        if went:
            self._transition(log.warning, f"stale prices ({why}): %s; not trading them", went)
        if back:
            self._transition(log.info, "fresh prices again: %s; trading resumes", back)

    def _transition(self, level, text: str, names: list[str]) -> None:
        """One line per transition (all symbols that changed at once), bounded in number."""
        self.stale_transitions += 1
        if self.stale_transitions <= LOGGED_TRANSITIONS:
            level(text, ", ".join(names))
        elif self.stale_transitions == LOGGED_TRANSITIONS + 1:
            log.warning("more stale/fresh transitions follow; only counted (stale_symbols)")

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
        now = time.monotonic_ns()
        # Never trade on a stale price: the tick's own age (Gateway send time), or for a plain
        # feed, which carries none, the symbol's state from the last _watch.
        if self.max_age_ns and (now - tick_ns > self.max_age_ns if tick_ns else self.stale[i]):
            self.stale_skips += 1
            if self.stale_skips <= LOGGED_PROBLEMS:
                log.warning("no %s of %s: its price is stale (%s)", SIDE_NAME[side],
                            self.symbols[i], f"{(now - tick_ns) / 1e9:.1f}s old" if tick_ns
                            else f"older than {self.max_age_ns / 1e9:g}s")
            return
        self._order_seq += 1
        order = Order(f"{self._id_prefix}-{self._order_seq}", self.symbols[i], SIDE_NAME[side],
                      qty, round(price, 2), self.name, tick_ns, tick_seq, now)
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
        if entry is None:  # OrderClient filters these out; kept safe for other callers
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
        if order.symbol in self.symbols:   # (a re-attached book could, in theory, lack it)
            self.positions[self.symbols.index(order.symbol)] = before
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
