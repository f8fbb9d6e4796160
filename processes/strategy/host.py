"""StrategyHost: the live process that runs any Strategy (processes.strategy.api) on the stack.

Ticks come from shared memory, news from the Gateway, replies from the OrderManager; the
strategy only decides. The host keeps what a strategy could get wrong: the position per symbol,
one order in flight per symbol and side, backing off a symbol and side after a reject, no order on
a stale price, prices that are not finite and positive, exceptions in the strategy's hooks, and a
restarted OrderBook.

It waits for prices without a timer and without spinning: the book's PriceReader is an IdleSource
of the reactor. Before the reactor blocks it arms the reader (announces "I am about to sleep" in the
segment); the OrderBook then rings the reader's doorbell socket, which is in the same epoll set as
the news and order sockets. One wait covers all three inputs.

Stale prices and a dead OrderBook are noticed by a timer (_watch, every WATCH_INTERVAL), never per
tick: no order is made on a price older than `strategy.max_price_age`, and when the OrderBook dies
and a new one replaces its segment, the host re-attaches to the new segment by itself, keeping
its positions.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

from ext import OrderFramer, OrderGate, PriceReader, SharedPriceBook
from ext.layout import ReaderLost
from ext.orders_py import GATE_BACKOFF, GATE_NO_PRICE, GATE_PENDING
from ext.segment import BAND_REANCHOR_S, SegmentWatcher
from processes.shared import config as config_mod
from processes.shared import protocol, runtime
from processes.shared.dead_peer import DEAD_PEER_SOCKOPTS
from processes.shared.protocol import (
    MAX_FRAME,
    Ack,
    Order,
    ProtocolError,
    Reject,
    parse_news,
)
from processes.shared.telemetry import Recorder
from processes.strategy.api import BUY, SELL, SIGN, OrderReply, Strategy, Tick, check_submit
from processes.strategy.loader import load_strategy, section_name
from processes.strategy.order_client import OrderClient
from reactor import Backoff, Dialer, Reactor

LOGGED_PROBLEMS = 5    # bad frames and strategy errors logged one by one; the rest only counted
WATCH_INTERVAL = 0.2   # seconds between staleness, segment and backoff checks (a timer)
BOOK_DEAD_S = 2.0      # an OrderBook heartbeat (every 0.5 s) older than this: it is dead or hung
LOGGED_TRANSITIONS = 100  # stale/fresh and refusal lines logged; then only counted
REJECT_BACKOFF_S = 1.0      # a symbol and side waits this long after its first reject...
REJECT_BACKOFF_MAX_S = 30.0  # ...doubling per reject in a row up to this; an ack resets it
REFUSALS = ("pending", "stale", "backoff")


class StrategyHost:
    """Runs one Strategy and is its Context (name, symbols, log, submit, position, price,
    sentiment, now_ns).

    Per-symbol state is indexed by the symbol's place in `symbols` (strategy.symbols, or every
    market symbol), which does not change when the price book is replaced; per symbol and side
    it is indexed by 2 * index + (1 for BUY, 0 for SELL).
    """

    def __init__(self, reactor: Reactor, cfg: config_mod.Config,
                 process: str = "strategy") -> None:
        self.reactor = reactor
        self.cfg = cfg
        self.process = process
        s = cfg.strategy
        self.name = s.name
        self.log = logging.getLogger(process)
        cls, params = load_strategy(s, section_name(process))
        self.strategy: Strategy = cls(params)
        self.symbols: tuple[str, ...] = tuple(s.symbols or cfg.market.symbols)
        n = len(self.symbols)
        self._index = {sym: j for j, sym in enumerate(self.symbols)}
        self._by_bytes = {sym.encode(): j for j, sym in enumerate(self.symbols)}
        self.positions = [0] * n
        self.prices: list[float | None] = [None] * n
        self.sentiments: list[int | None] = [None] * n
        self.stale = [False] * n
        self._last_tick_ns = [0] * n       # the Gateway send time of each symbol's last tick
        self._pending = [0] * (2 * n)      # orders in flight per symbol and side
        self._backoff_until = [0] * (2 * n)   # monotonic ns; 0 = not backing off
        self._backoff_next = [0.0] * (2 * n)  # the next backoff's length; 0 = the first
        self._refusing: list[str | None] = [None] * (2 * n)  # the reason last refused, for logs
        self.book: SharedPriceBook | None = None
        self.reader: PriceReader | None = None
        self._slot: list[int] = []         # book index -> our symbol index, -1 = not traded
        self._id_prefix = f"{s.name}-{os.getpid()}-{time.time_ns() // 1_000_000}"
        # The hot path: the user's on_tick bound once, one Tick reused for every call.
        self._on_tick_hook = self.strategy.on_tick
        self._tick = Tick()
        self._tick_j = -1                  # the symbol of the on_tick running now, else -1
        self._decided = False              # tick_to_decision recorded for the running on_tick
        self._live_ns = 0                  # when the reader went live: older ticks are no sample
        self.early_ticks = 0               # decided on, sent before that: not latency samples
        self.ticks = 0
        self.decisions = 0
        self.news = 0
        self.bad_news = 0
        self.unknown_news = 0   # news for a symbol this strategy does not trade: not news to us
        self._unknown_news_logged: set[bytes] = set()
        self.bad_prices = 0
        # The implausibility band (strategy.max_price_jump): the per-tick test is one chained
        # comparison against bounds the watch timer refreshes around the last accepted price;
        # (0, inf) until then, which is also the finite-and-positive test.
        self.max_jump = s.max_price_jump
        self._lo = [0.0] * n
        self._hi = [math.inf] * n
        self.implausible = [0] * n          # per symbol
        self._jump_since = [0] * n          # monotonic ns an episode started; 0 = none
        self._jump_seen = [0] * n           # implausible[j] as of the last watch
        self._reader_lost = False
        self.strategy_errors = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.backoffs = 0
        self.refusal_lines = 0
        self._started = False
        # The book at the name, followed across OrderBook restarts (one identity rule for every
        # process that reads the book: ext.segment); our reader is hooked onto its attach/detach.
        self.segment = SegmentWatcher(cfg.market.shm_name, Backoff(initial=0.1, maximum=2.0),
                                      on_attach=self._adopt, on_detach=self._on_book_lost,
                                      dead_after=BOOK_DEAD_S, symbols=cfg.market.symbols)
        self.max_age_ns = int(s.max_price_age * 1e9)
        # The gate shares the per-symbol lists above: this host mutates them in place and never
        # rebinds or resizes them (the compiled gate indexes them without bounds checks).
        self._gate = OrderGate(OrderFramer(protocol, self._id_prefix, self.name, self.symbols),
                               self.positions, self._pending, self._last_tick_ns, self.prices,
                               self.stale, self._backoff_until, self._refusing,
                               self.max_age_ns)
        self.stale_transitions = 0
        self.book_dead = False             # the OrderBook's heartbeat stopped
        self.reattaches = 0
        self.tick_to_decision = Recorder("tick_to_decision")  # Gateway send -> on_tick decided
        self.order_to_ack = Recorder("order_to_ack")          # our send -> OrderManager's ack
        self.tick_to_ack = Recorder("tick_to_ack")            # Gateway send -> ack received
        net = cfg.network
        self.news_dialer = Dialer(reactor, net.gateway_host, net.news_port, on_frame=self._on_news,
                                  on_connect=lambda c: self.log.info("connected to news %s",
                                                                     c.peer),
                                  on_disconnect=self._on_news_lost, backoff=Backoff(),
                                  max_frame=MAX_FRAME, sockopts=DEAD_PEER_SOCKOPTS)
        self.orders_out = OrderClient(reactor, net.order_host, net.order_port, self._on_reply,
                                      s.name, config_mod.effective_token(s.token), self.log,
                                      gate=self._gate)

    @property
    def orders(self) -> int:
        """Orders made (the gate counts them)."""
        return self._gate.orders

    # --- Context ---------------------------------------------------------------------------------
    def now_ns(self) -> int:
        return time.monotonic_ns()

    def position(self, symbol: str) -> int:
        j = self._index.get(symbol)
        return 0 if j is None else self.positions[j]

    def price(self, symbol: str) -> float | None:
        j = self._index.get(symbol)
        return None if j is None else self.prices[j]

    def sentiment(self, symbol: str) -> int | None:
        j = self._index.get(symbol)
        return None if j is None else self.sentiments[j]

    def submit(self, symbol: str, side: str, qty: int, price: float) -> str | None:
        j, sign, price = check_submit(self.name, self.symbols, self._index, symbol, side, qty,
                                      price)
        now = time.monotonic_ns()
        in_tick = self._tick_j >= 0
        tick = self._tick
        tick_ns, tick_seq = (tick.sent_ns, tick.seq) if in_tick else (0, 0)
        # The last checks (one in flight per symbol and side, never on a stale price, not while
        # backing off), the frame, the send and the books are one call; the Order is built after
        # the block that lets the OrderManager answer (OrderClient.settle).
        made = self._gate.send(j, sign > 0, qty, price, now, tick_ns, tick_seq)
        decided = 0   # this tick's decision latency, recorded after the send (it can wait)
        if in_tick and not self._decided:
            self._decided = True
            if tick_ns and tick_ns >= self._live_ns:
                decided = now - tick_ns
        if type(made) is not str:
            made = self._not_made(made, j, sign, qty, price, now, tick_ns, tick_seq, decided)
            if made is None:
                return None
        gate = self._gate
        if gate.written < gate.length:
            self.orders_out.complete()
        if decided:
            self.tick_to_decision.record(decided)
        return made

    def _not_made(self, code: int, j: int, sign: int, qty: int, price: float, now: int,
                  tick_ns: int, tick_seq: int, decided: int) -> str | None:
        """The gate did not make the order (`code`): refuse it, or make it after all (a backoff
        that is over). Its id, or None if refused."""
        key = 2 * j + (sign > 0)
        if code == GATE_BACKOFF:
            if now < self._backoff_until[key]:
                return self._refuse(key, "backoff", "", decided)
            self._end_backoff(key, "over")
            code = self._gate.send(j, sign > 0, qty, price, now, tick_ns, tick_seq)
            if type(code) is str:
                return code
        if code == GATE_PENDING:
            return self._refuse(key, "pending", "an order of that side is still in flight",
                                decided)
        if code == GATE_NO_PRICE:   # an order from on_start or on_news before any tick
            return self._refuse(key, "stale", "it has had no valid price yet", decided)
        # GATE_STALE: the symbol's last tick is too old (a plain feed: its _watch's verdict)
        return self._refuse(key, "stale", f"its price is older than "
                            f"{self.max_age_ns / 1e9:g}s", decided)

    def _refuse(self, key: int, reason: str, why: str, decided: int = 0) -> None:
        """Count the refusal (and record the tick's decision latency, if the refused submit
        decided it); log it when this symbol and side starts being refused for it (a strategy
        asks again on every tick: that is not worth a line each time)."""
        if decided:
            self.tick_to_decision.record(decided)
        self.refused[reason] += 1
        if self._refusing[key] != reason:
            self._refusing[key] = reason
            if why:   # a backoff has its own start and end lines
                self._refusal_line("refusing %s %s: %s", self._side(key),
                                   self.symbols[key >> 1], why)
        return None

    def _refusal_line(self, text: str, *args: Any, level: int = logging.WARNING) -> None:
        self.refusal_lines += 1
        if self.refusal_lines <= LOGGED_TRANSITIONS:
            self.log.log(level, text, *args)
        elif self.refusal_lines == LOGGED_TRANSITIONS + 1:
            self.log.warning("more refusals and backoffs follow; only counted (refused_*)")

    @staticmethod
    def _side(key: int) -> str:
        return BUY if key & 1 else SELL

    def _start_backoff(self, key: int, reason: str) -> None:
        delay = self._backoff_next[key] or REJECT_BACKOFF_S
        self._backoff_next[key] = min(delay * 2, REJECT_BACKOFF_MAX_S)
        self._backoff_until[key] = time.monotonic_ns() + int(delay * 1e9)
        self.backoffs += 1
        self._refusal_line("backing off %s %s for %gs after a reject (%s)", self._side(key),
                           self.symbols[key >> 1], delay, reason)

    def _end_backoff(self, key: int, why: str) -> None:
        self._backoff_until[key] = 0
        self._refusing[key] = None
        self._refusal_line("backoff of %s %s %s; orders allowed again", self._side(key),
                           self.symbols[key >> 1], why, level=logging.INFO)

    # --- the strategy's hooks --------------------------------------------------------------------
    def _hook_failed(self, hook: str) -> None:
        """A hook raised: the event is skipped, the process keeps running."""
        self.strategy_errors += 1
        if self.strategy_errors <= LOGGED_PROBLEMS:
            self.log.exception("%s.%s raised; event skipped", type(self.strategy).__name__, hook)
        elif self.strategy_errors == LOGGED_PROBLEMS + 1:
            self.log.error("more errors in the strategy's hooks follow; only counted "
                           "(strategy_errors)")

    def _call(self, hook: str, *args: Any) -> None:
        try:
            getattr(self.strategy, hook)(*args)
        except Exception:
            self._hook_failed(hook)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        self.strategy.ctx = self   # also for a strategy whose on_start forgets super()
        self._started = True
        self._call("on_start", self)
        self.news_dialer.start()
        self.orders_out.start()
        attached = self.segment.poll()
        self.reactor.call_every(WATCH_INTERVAL, self._watch)
        return {"shm_name": self.cfg.market.shm_name, "attached": attached, "name": self.name,
                "class": self.cfg.strategy.cls, "symbols": ",".join(self.symbols),
                "max_price_age": self.cfg.strategy.max_price_age}

    def close(self) -> None:
        if self._started:
            self._started = False
            self._call("on_stop")
        self.news_dialer.close()
        self.orders_out.close()
        self.segment.close()

    def recorders(self) -> tuple[Recorder, ...]:
        out = self.orders_out
        return (self.tick_to_decision, self.order_to_ack, self.tick_to_ack, out.submit_to_sent,
                out.reply_handled)

    def stats(self) -> dict[str, Any]:
        held = sum(1 for p in self.positions if p)
        out = self.orders_out
        out.settle()   # every counter below includes the orders the gate made since the last
        return {"name": self.name, "class": self.cfg.strategy.cls,
                "ticks": self.ticks, "decisions": self.decisions, "news": self.news,
                "early_ticks": self.early_ticks,
                "orders": self.orders, "acks": out.acks, "rejects": out.rejects,
                "refused": sum(self.refused.values()),
                **{f"refused_{k}": v for k, v in self.refused.items()},
                "backoffs": self.backoffs, "strategy_errors": self.strategy_errors,
                "bad_prices": self.bad_prices, "implausible_prices": sum(self.implausible),
                "implausible": list(self.implausible), "unsent": out.unsent,
                "pending": len(out.pending), "resent": out.resent,
                "om_refusals": out.refusals, "held": held,
                "reconnects": self.news_dialer.reconnects + out.dialer.reconnects,
                "bad_news": self.bad_news, "unknown_news": self.unknown_news,
                "bad_replies": out.bad_replies,
                "stale_symbols": sum(self.stale), "stale_skips": self.refused["stale"],
                "book_dead": self.book_dead, "attached": self.book is not None,
                "reattaches": self.reattaches,
                "symbols": list(self.symbols), "positions": list(self.positions),
                "sentiment": list(self.sentiments)}

    # --- the price book: attach, re-attach, staleness (timer, off the hot path) ------------------
    def _adopt(self, book: SharedPriceBook) -> None:
        """Use `book`. Our per-symbol state is indexed by our own symbols, so a re-attach keeps
        every position, sentiment and the strategy's own state; only the slot map is new."""
        again = self.segment.attaches > 1
        self._slot = [self._index.get(sym, -1) for sym in book.symbols]
        missing = [sym for sym in self.symbols if sym not in book.symbols]
        self.book = book
        self.reader = book.reader()
        # The reactor disarms its sources on every wake-up, on the way to the tick or the ack
        # that woke it: the reader's own (compiled) method, not a Python call wrapping it.
        self.disarm = self.reader.disarm
        # A tick sent before our reader was live (a CSV replayed at speed before we attached,
        # the book's last values at a re-attach) waited for us, not for the pipeline: its age at
        # our decision is not a tick -> decision latency.
        self._live_ns = time.monotonic_ns()
        self.reactor.add_reader(self.reader.fileno(), self.reader.drain)
        self.reactor.add_source(self)
        if missing:
            self.log.warning("%s not in the price book %s: no ticks for them",
                             ", ".join(missing), book.name)
        if again:
            self.reattaches += 1
            held = sum(1 for p in self.positions if p)
            self.log.warning("re-attached to %s (OrderBook pid %d): %d symbols, %d positions "
                             "kept", book.name, self.segment.owner_pid, len(book.symbols), held)
        else:
            self.log.info("attached to %s: %d symbols, trading %d", book.name,
                          len(book.symbols), len(self.symbols) - len(missing))

    def _on_book_lost(self, reason: str) -> None:
        """The watcher lets go of the book (vanished, replaced, or our own close): unhook the
        reader while the mapping is still there; the state stays for the next book."""
        if self.reader is not None:
            self.reactor.remove_source(self)
            self.reactor.remove_reader(self.reader.fileno())
            self.reader.close()
            self.reader = None
        self.book = None
        if self._started:   # not our own shutdown
            self.log.warning("price book %s; detaching and re-attaching with backoff "
                             "(positions kept)", reason)
            self._set_stale([True] * len(self.stale), "no price book")

    def _watch(self) -> None:
        """Every WATCH_INTERVAL: end the backoffs that are over, then: is our segment still the
        one at the name, is its OrderBook alive (heartbeat), and which symbols have a price
        younger than max_price_age?

        A segment that vanished or was replaced (a restarted OrderBook reclaims the name and
        creates a new one; ours is then unlinked and never written again) is let go and the new
        one attached. The per-symbol state is for stats(), one log line per transition and the
        orders of a plain feed; a tick with a send time is judged by its own age (submit).
        """
        now = time.monotonic_ns()
        for key, until in enumerate(self._backoff_until):
            if until and now >= until:
                self._end_backoff(key, "over")
        self._watch_band()
        if self._reader_lost:
            self._reader_lost = False
            self.segment.detach("our reader entry was overwritten")
        if not self.segment.poll():
            return  # between segments: the watcher retries with backoff
        why = self.segment.liveness(now)
        dead = why is not None
        if dead != self.book_dead:
            self.book_dead = dead
            if dead:
                self.log.error("%s: its prices are stale; not trading until it is back", why)
            else:
                self.log.warning("OrderBook (pid %d) heartbeat is back", self.segment.owner_pid)
        if dead:
            self._set_stale([True] * len(self.stale), "OrderBook silent")
            return
        book, max_age = self.book, self.max_age_ns
        stale = list(self.stale)
        for i, j in enumerate(self._slot):
            if j < 0 or book.seq(i) & 1:
                continue  # not traded, or mid-write (or left odd): keep it, never wait on it
            try:
                write_ns = book.read_slot(i)[3]
            except TimeoutError:   # went odd just now and stayed so: its owner repairs it
                continue
            stale[j] = bool(max_age) and (not write_ns or now - write_ns > max_age)
        self._set_stale(stale, f"older than {max_age / 1e9:g}s")

    def _watch_band(self) -> None:
        """Refresh each symbol's band around its last accepted price, and end the episodes
        with no implausible price since the last watch (one line at the start, one at the end)."""
        jump = self.max_jump
        if not jump:
            return
        lo, hi = self._lo, self._hi
        for j, p in enumerate(self.prices):
            if p is not None:
                lo[j], hi[j] = p * (1 - jump), p * (1 + jump)
            if self._jump_since[j] and self.implausible[j] == self._jump_seen[j]:
                self._jump_since[j] = 0
                self._refusal_line("prices of %s are plausible again (%d implausible so far)",
                                   self.symbols[j], self.implausible[j], level=logging.INFO)
            self._jump_seen[j] = self.implausible[j]

    def _out_of_band(self, j: int, price: float) -> bool:
        """A tick outside (lo, hi): True if it is used after all (the band re-anchors on it).
        Not finite and positive: bad_prices. Otherwise implausible, counted per symbol; an
        episode that lasts BAND_REANCHOR_S re-anchors, so a real move larger than the band
        is traded again."""
        if not 0.0 < price < math.inf:   # NaN, inf, 0 or negative never reach the strategy
            self.bad_prices += 1
            return False
        self.implausible[j] += 1
        now = time.monotonic_ns()
        if not self._jump_since[j]:
            self._jump_since[j] = now
            self._refusal_line("implausible price of %s: %r (last accepted %r, band +-%g%%); "
                               "not used", self.symbols[j], price, self.prices[j],
                               self.max_jump * 100)
            return False
        if now - self._jump_since[j] < BAND_REANCHOR_S * 1e9:
            return False
        self._jump_since[j] = 0
        self._refusal_line("price of %s out of the band for %gs: re-anchored on %r",
                           self.symbols[j], BAND_REANCHOR_S, price)
        jump = self.max_jump
        self._lo[j], self._hi[j] = price * (1 - jump), price * (1 + jump)
        return True

    def _set_stale(self, stale: list[bool], why: str) -> None:
        went = [s for s, old, new in zip(self.symbols, self.stale, stale) if new and not old]
        back = [s for s, old, new in zip(self.symbols, self.stale, stale) if old and not new]
        self.stale[:] = stale   # in place: the order gate shares the list
        if went:
            self._transition(self.log.warning, f"stale prices ({why}): %s; not trading them",
                             went)
        if back:
            self._transition(self.log.info, "fresh prices again: %s; trading resumes", back)

    def _transition(self, level: Any, text: str, names: list[str]) -> None:
        """One line per transition (all symbols that changed at once), bounded in number."""
        self.stale_transitions += 1
        if self.stale_transitions <= LOGGED_TRANSITIONS:
            level(text, ", ".join(names))
        elif self.stale_transitions == LOGGED_TRANSITIONS + 1:
            self.log.warning("more stale/fresh transitions follow; only counted (stale_symbols)")

    # --- IdleSource: the shared-memory price feed (hot path) -------------------------------------
    def poll(self) -> bool:
        reader = self.reader
        n = reader.poll()
        if not n:
            return False
        indices, prices, sent = reader.indices, reader.prices, reader.sent_ns
        tick_seqs, slot = reader.tick_seqs, self._slot
        for k in range(n):
            j = slot[indices[k]]
            if j >= 0:
                self._on_tick(j, prices[k], sent[k], tick_seqs[k])
        self.ticks += n
        return True

    def arm(self) -> bool:
        try:
            return self.reader.arm()
        except ReaderLost:
            # Our entry was overwritten: the reader is stale. Re-attaching here would change
            # the reactor's sources while it arms them; the watch timer (which bounds this
            # wait) detaches and re-attaches instead.
            self._reader_lost = True
            return True

    def disarm(self) -> None:
        """Shadowed by the attached reader's own disarm (see _adopt)."""
        self.reader.disarm()

    def _on_tick(self, j: int, price: float, sent_ns: int, tick_seq: int) -> None:
        if not self._lo[j] < price < self._hi[j] and not self._out_of_band(j, price):
            return
        self.prices[j] = price
        self._last_tick_ns[j] = sent_ns
        tick = self._tick
        tick.index = j
        tick.seq = tick_seq
        tick.sent_ns = sent_ns
        self._tick_j = j
        self._decided = False
        try:
            self._on_tick_hook(self.symbols[j], price, tick)
        except Exception:
            self._hook_failed("on_tick")
        self._tick_j = -1
        if sent_ns and sent_ns < self._live_ns:
            self.early_ticks += 1
        elif not self._decided and sent_ns:
            self.tick_to_decision.record(time.monotonic_ns() - sent_ns)
        self.decisions += 1

    # --- news and replies ------------------------------------------------------------------------
    def _on_news(self, frame: memoryview) -> None:
        try:
            sym, value = parse_news(frame)
        except ProtocolError as exc:
            self.bad_news += 1
            if self.bad_news <= LOGGED_PROBLEMS:
                self.log.warning("skipped news frame %r: %s", bytes(frame[:80]), exc)
            return
        if sym is not None and sym not in self._by_bytes:
            self.unknown_news += 1
            if (sym not in self._unknown_news_logged
                    and len(self._unknown_news_logged) < LOGGED_PROBLEMS):
                self._unknown_news_logged.add(sym)   # once per symbol: a feed repeats itself
                self.log.warning("news for %r, a symbol we do not trade, skipped (counted in "
                                 "unknown_news)", bytes(sym[:40]))
            return
        self.news += 1
        if sym is None:   # market-wide: every symbol we trade hears it
            self.sentiments[:] = [value] * len(self.sentiments)
            for symbol in self.symbols:
                self._call("on_news", symbol, value)
            return
        j = self._by_bytes.get(sym)
        if j is not None:
            self.sentiments[j] = value
            self._call("on_news", self.symbols[j], value)

    def _on_news_lost(self, reason: str | None) -> None:
        if self.news_dialer.closed:
            return  # our own shutdown
        self.log.warning("news feed lost (%s); reconnecting", reason or "closed by peer")

    def _on_reply(self, reply: Ack | Reject, order: Order, received_ns: int = 0) -> None:
        """`received_ns`: when the reply's bytes were read (OrderClient), else now."""
        j = self._index.get(order.symbol)
        sign = SIGN.get(order.side, 0)
        if j is None or not sign:
            return   # not an order this host made (the OrderClient only passes its own)
        key = 2 * j + (sign > 0)
        self._pending[key] = max(0, self._pending[key] - 1)
        if type(reply) is Ack:
            now = received_ns or time.monotonic_ns()
            self.order_to_ack.record(now - order.sent_ns)
            if order.tick_ns:
                self.tick_to_ack.record(now - order.tick_ns)
            self._backoff_next[key] = 0.0
            if self._backoff_until[key]:
                self._end_backoff(key, "ended by an ack")
            answer = OrderReply("ack", reply.order_no)
        else:
            # Rejected: the position we assumed never happened; the side waits a while.
            reason = reply.reason[:300]
            self.positions[j] -= sign * order.qty
            self.log.warning("order %s %s %d %s rejected: %s (position back to %+d)", order.id,
                             order.side, order.qty, order.symbol, reason, self.positions[j])
            self._start_backoff(key, reason)
            answer = OrderReply("reject", reason=reason)
        self._call("on_order_reply", order, answer)


def run(cfg: config_mod.Config, ready: Any = None, supervised: bool = False,
        name: str = "strategy") -> int:
    """Run the strategy process `name` ("strategy" or "strategy.NAME") until SIGTERM."""
    return runtime.serve(name, cfg, lambda r: StrategyHost(r, cfg, name), ready,
                         supervised=supervised)


def main(argv: list[str] | None = None) -> int:
    cfg = runtime.cli("strategy", "Run the strategy named by strategy.class (default: the "
                      "built-in MA crossover + sentiment) on the live stack.", ("strategy",),
                      argv, extra=(("network", "news_port"), ("network", "order_port")))
    if cfg is None:
        return 0
    try:
        load_strategy(cfg.strategy)   # a typo is one line here, not a failed start-up
    except config_mod.ConfigError as exc:
        print(f"python -m processes.strategy: error: {exc}", file=sys.stderr)
        return 2
    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
