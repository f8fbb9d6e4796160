"""Backtest: run a Strategy over a recorded market file offline, deterministically.

    python -m processes.strategy.backtest --csv data/sample_prices.csv [--config FILE]
        [--set strategy.class=pkg.mod:Class] [--set strategy.params.X=V] [--json]

The strategy is the configured one ([strategy]: class, params, symbols, name), built exactly as
the live host builds it. No sockets, no shared memory, no clock: the events are the file's rows
(processes.gateway.replay format) in file order, a news row calls on_news, a price row calls
on_tick, and now_ns() is the row's recorded time. So two runs on one file give the same orders.

The BacktestContext keeps the live host's rules (processes.strategy.api): the position moves
when an order is submitted; a second order for a symbol and side is refused while one is in
flight; a bad side, qty, price or symbol raises ValueError; market-wide news calls on_news once
per traded symbol; non-finite or non-positive prices are skipped; an exception in a hook is
logged and counted and that event is skipped. Every order is acked (order_no 1, 2, ...) right
after the hook that submitted it returns, before the next event, and booked in full at its
price, as the OrderManager books it. Not modelled: rejects (risk limits, kill switch), latency
and stale prices, since the file's time is the only clock.

The report lists the orders as the OrderManager logs them and the PnL as the dashboard computes
it (processes.shared.pnl.PnLBook, average cost), marked at each symbol's last price in the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from processes.shared import config as config_mod
from processes.shared.market_file import Event, ReplayError, load_events
from processes.shared.pnl import PnLBook, totals
from processes.shared.protocol import Order
from processes.strategy.api import (
    OrderReply,
    Strategy,
    StrategyConfig,
    Tick,
    check_submit,
)
from processes.strategy.loader import load_strategy

log = logging.getLogger("backtest")



@dataclass(frozen=True, slots=True)
class BacktestOrder:
    """One acked order, with the fields the OrderManager logs."""

    order_no: int
    id: str
    symbol: str
    side: str
    qty: int
    price: float
    ts: float          # recorded time of the event whose hook submitted it

    def line(self) -> str:
        return f"Order {self.order_no}: {self.side} {self.qty} {self.symbol} @ {self.price:.2f}"

    def to_json(self) -> dict[str, Any]:
        return {"order_no": self.order_no, "id": self.id, "symbol": self.symbol,
                "side": self.side, "qty": self.qty, "price": self.price, "ts": self.ts}


@dataclass
class BacktestResult:
    """What a run produced: the orders in order, the PnL per symbol and in total, and counts."""

    name: str
    orders: list[BacktestOrder]
    pnl: dict[str, dict[str, float]]     # symbol -> position, avg_price, realized, unrealized
    totals: dict[str, float]             # realized, unrealized, total
    marks: dict[str, float]              # the last price of each symbol
    ticks: int = 0
    news: int = 0
    skipped: int = 0                     # price events not finite or <= 0
    refusals: int = 0                    # submits the host refused (same side in flight)
    errors: int = 0                      # hooks that raised
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "orders": [o.to_json() for o in self.orders],
                "pnl": {"symbols": self.pnl, **self.totals}, "marks": self.marks,
                "ticks": self.ticks, "news": self.news, "skipped": self.skipped,
                "refusals": self.refusals, "errors": self.errors}

    def report(self) -> str:
        """The orders, then the PnL table the way the dashboard shows it."""
        out = [o.line() for o in self.orders]
        out.append(f"{len(self.orders)} orders from {self.ticks} ticks and {self.news} news "
                   f"events ({self.refusals} refused submits, {self.errors} hook errors)")
        out.append(f"{'symbol':<8}{'position':>10}{'avg price':>12}{'mark':>12}"
                   f"{'realized':>12}{'unrealized':>12}")
        for sym, row in self.pnl.items():
            mark = self.marks.get(sym)
            out.append(f"{sym:<8}{row['position']:>10}{row['avg_price']:>12.2f}"
                       f"{(f'{mark:.2f}' if mark is not None else '-'):>12}"
                       f"{row['realized']:>12.2f}{row['unrealized']:>12.2f}")
        t = self.totals
        out.append(f"PnL: realized {t['realized']:.2f}, unrealized {t['unrealized']:.2f}, "
                   f"total {t['total']:.2f}")
        return "\n".join(out)


class BacktestContext:
    """api.Context over recorded events: the live host's rules, the file's clock."""

    __slots__ = ("name", "symbols", "log", "_index", "_prices", "_sentiment", "_positions",
                 "_in_flight", "_now_ns", "_tick_ns", "_tick_seq", "_seq", "queued",
                 "refusals")

    def __init__(self, name: str, symbols: tuple[str, ...], logger: logging.Logger) -> None:
        self.name = name
        self.symbols = symbols
        self.log = logger
        self._index = {s: i for i, s in enumerate(symbols)}
        self._prices: list[float | None] = [None] * len(symbols)
        self._sentiment: list[int | None] = [None] * len(symbols)
        self._positions = [0] * len(symbols)
        self._in_flight: set[tuple[str, str]] = set()
        self._now_ns = 0
        self._tick_ns = 0            # the current tick's time (0 while handling news)
        self._tick_seq = 0
        self._seq = 0
        self.queued: list[Order] = []   # submitted during the current hook, acked after it
        self.refusals = 0

    def now_ns(self) -> int:
        return self._now_ns

    def submit(self, symbol: str, side: str, qty: int, price: float) -> str | None:
        i, sign, price = check_submit(self.name, self.symbols, self._index, symbol, side, qty,
                                      price)
        if (symbol, side) in self._in_flight:
            self.refusals += 1
            self.log.debug("refused %s %d %s: a %s order is in flight", side, qty, symbol, side)
            return None
        self._seq += 1
        order = Order(id=f"{self.name}-bt-{self._seq}", client=self.name, symbol=symbol,
                      side=side, qty=qty, price=price, tick_ns=self._tick_ns,
                      tick_seq=self._tick_seq, sent_ns=self._now_ns)
        self._in_flight.add((symbol, side))
        self._positions[i] += sign * qty
        self.queued.append(order)
        return order.id

    def position(self, symbol: str) -> int:
        i = self._index.get(symbol)
        return 0 if i is None else self._positions[i]

    def price(self, symbol: str) -> float | None:
        i = self._index.get(symbol)
        return None if i is None else self._prices[i]

    def sentiment(self, symbol: str) -> int | None:
        i = self._index.get(symbol)
        return None if i is None else self._sentiment[i]


class Backtest:
    """Runs one Strategy class over events: `Backtest(cls, config, symbols).run(events)`."""

    def __init__(self, strategy_cls: type[Strategy], config: StrategyConfig,
                 symbols: Sequence[str], name: str = "backtest",
                 logger: logging.Logger | None = None) -> None:
        self.strategy_cls = strategy_cls
        self.config = config
        self.symbols = tuple(symbols)
        self.name = name
        self.log = logger or logging.getLogger(f"strategy.{name}")

    def run(self, events: Iterable[Event]) -> BacktestResult:
        """Every event in order through a fresh strategy and context; the result."""
        ctx = BacktestContext(self.name, self.symbols, self.log)
        strategy = self.strategy_cls(self.config)
        book = PnLBook()
        orders: list[BacktestOrder] = []
        marks: dict[str, float] = {}
        seqs = [0] * len(self.symbols)
        tick = Tick()
        ticks = news = skipped = errors = 0

        def call(hook: Any, *args: Any) -> None:
            nonlocal errors
            try:
                hook(*args)
            except Exception:
                errors += 1
                self.log.exception("%s raised; event skipped", getattr(hook, "__name__", hook))
            # Acks follow the hook that submitted, before the next event; an ack's own hook
            # may submit again, which is acked in turn.
            while ctx.queued:
                queued, ctx.queued = ctx.queued, []
                for order in queued:
                    ctx._in_flight.discard((order.symbol, order.side))
                    order_no = len(orders) + 1
                    orders.append(BacktestOrder(order_no, order.id, order.symbol, order.side,
                                                order.qty, order.price, ctx._now_ns / 1e9))
                    book.on_fill(self.name, order.symbol, order.side, order.qty, order.price)
                    call(strategy.on_order_reply, order, OrderReply("ack", order_no))

        ctx._now_ns = 0
        strategy.ctx = ctx   # as the live host does: also for an on_start that skips super()
        call(strategy.on_start, ctx)
        index = ctx._index
        for ev in events:
            ctx._now_ns = round(ev.ts * 1e9)
            if ev.price is None:
                if ev.sentiment is None:
                    continue
                news += 1
                ctx._tick_ns = ctx._tick_seq = 0
                targets = [s for s in (self.symbols if ev.symbol is None else (ev.symbol,))
                           if s in index]
                # Every sentiment first, then the hooks, as the live host does: a hook that
                # reads another symbol's sentiment sees this news already.
                for sym in targets:
                    ctx._sentiment[index[sym]] = ev.sentiment
                for sym in targets:
                    call(strategy.on_news, sym, ev.sentiment)
                continue
            i = index.get(ev.symbol)
            if i is None:
                continue
            price = ev.price
            if not (math.isfinite(price) and price > 0):
                skipped += 1
                continue
            ticks += 1
            seqs[i] += 1
            ctx._prices[i] = price
            marks[ev.symbol] = price
            tick.index, tick.seq, tick.sent_ns = i, seqs[i], ctx._now_ns
            ctx._tick_ns, ctx._tick_seq = ctx._now_ns, seqs[i]
            call(strategy.on_tick, ev.symbol, price, tick)
        call(strategy.on_stop)
        marked = book.mark(marks).get(self.name, {})
        total = totals({self.name: marked})
        return BacktestResult(self.name, orders, marked,
                              {k: total[k] for k in ("realized", "unrealized", "total")},
                              dict(sorted(marks.items())), ticks, news, skipped, ctx.refusals,
                              errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m processes.strategy.backtest",
        description="Run the configured Strategy offline over a recorded market file.")
    parser.add_argument("--csv", required=True, metavar="PATH",
                        help="recorded file (timestamp,symbol,price[,sentiment])")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help=f"TOML settings file (default: {config_mod.DEFAULT_CONFIG.name} if "
                             "present)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        help="override a setting, e.g. --set strategy.params.quantity=5")
    parser.add_argument("--json", action="store_true", help="print the orders and PnL as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_mod.from_args(args)
        section = cfg.strategy
        strategy_cls, params = load_strategy(section, "strategy")
        symbols = section.symbols or cfg.market.symbols
        events, report = load_events(args.csv, cfg.market.symbols)
    except (config_mod.ConfigError, ReplayError) as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    for line in report.lines()[1:]:
        log.warning("%s", line)
    result = Backtest(strategy_cls, params, symbols, section.name).run(events)
    text = json.dumps(result.to_json(), indent=2) if args.json else result.report()
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader left early (`| head`): what it took is what it wanted. Point stdout at
        # /dev/null so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
