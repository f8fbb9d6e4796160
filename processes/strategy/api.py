"""The Strategy API: what a user subclasses to trade on tradestack, and what it may call.

A strategy is a `Strategy` subclass with its own typed settings, a `StrategyConfig` subclass,
both in the user's own file:

    class SentimentOnlyConfig(StrategyConfig):
        threshold: int = 80

    class SentimentOnly(Strategy):
        config_class = SentimentOnlyConfig

        def on_news(self, symbol: str, sentiment: int) -> None:
            if sentiment > self.config.threshold and self.ctx.position(symbol) <= 0:
                price = self.ctx.price(symbol)
                if price is not None:
                    self.ctx.submit(symbol, BUY, self.config.quantity, price)

and is chosen by config: `strategy.class = "examples.sentiment:SentimentOnly"`, its settings in
`[strategy.params]`, checked by `config_class` (msgspec: unknown keys and wrong types are errors
that name the key).

The host (a live Strategy process, or the backtester) owns everything a strategy could get wrong:
the position per symbol (moved when an order is submitted, restored when it is rejected), no
second order for a symbol and side while one is in flight, resending after an OrderManager
outage, backing off a symbol and side after a reject, stale prices, re-attaching to a restarted
OrderBook, and the latency telemetry. The strategy only decides.

Hooks run on the host's single thread, one at a time, and must return quickly: a tick waits for
the hook before it. An exception in a hook is logged and counted by the host, and that event is
skipped; the strategy keeps running.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar, Protocol

import msgspec

from processes.shared.protocol import MAX_I64, Order  # Order: what on_order_reply is given

__all__ = ["BUY", "SELL", "SIGN", "Context", "Order", "OrderReply", "Strategy",
           "StrategyConfig", "Tick", "check_submit"]

BUY = "BUY"
SELL = "SELL"
SIGN = {BUY: 1, SELL: -1}   # what a filled order of each side does to the position


def check_submit(strategy: str, symbols: tuple[str, ...], index: dict[str, int], symbol: str,
                 side: str, qty: int, price: float) -> tuple[int, int, float]:
    """(symbol index, side sign, order price) of a valid Context.submit, else ValueError: the
    one statement of what a strategy may submit, for the live host and the backtester alike.
    The order price is the submitted one rounded to the cent, as the OrderManager books it."""
    j = index.get(symbol)
    if j is None:
        raise ValueError(f"submit: {symbol!r} is not traded by {strategy} "
                         f"(strategy.symbols: {', '.join(symbols)})")
    sign = SIGN.get(side)
    if sign is None:
        raise ValueError(f"submit: side {side!r} is not BUY or SELL")
    if type(qty) is not int or not 0 < qty <= MAX_I64:
        raise ValueError(f"submit: qty {qty!r} is not an int > 0 and <= {MAX_I64}")
    if type(price) not in (int, float) or not 0.0 < price < math.inf:
        raise ValueError(f"submit: price {price!r} is not a finite number > 0")
    cents = round(float(price), 2)
    if cents <= 0.0:
        raise ValueError(f"submit: price {price!r} is 0.00 to the cent")
    return j, sign, cents


class StrategyConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every strategy's settings ([strategy.params]); subclass it and add typed fields
    with defaults. `quantity` is the order size most strategies need."""

    quantity: int = 10

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError("quantity must be > 0")


class Tick:
    """The tick being handled: valid only during the on_tick call it is passed to (the host
    reuses one object, so the hot path allocates nothing). Copy what you keep."""

    __slots__ = ("index", "seq", "sent_ns")

    def __init__(self) -> None:
        self.index = 0     # the symbol's position in Context.symbols
        self.seq = 0       # the Gateway's per-symbol tick sequence (0 on a plain feed)
        self.sent_ns = 0   # the Gateway's send time on this host's CLOCK_MONOTONIC, ns (0 on a
                           # plain feed); README, "Clocks"


class OrderReply(msgspec.Struct, frozen=True):
    """The OrderManager's answer to one order: an ack with its number, or a reject with why."""

    kind: str                 # "ack" | "reject"
    order_no: int | None = None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.kind == "ack"


class Context(Protocol):
    """What a strategy may ask of its host; the live host and the backtester both provide it."""

    name: str                       # this strategy's client name (strategy.name)
    symbols: tuple[str, ...]        # what it trades (strategy.symbols, or every market symbol)
    log: logging.Logger             # its own logger: lines land in its own log file

    def now_ns(self) -> int:
        """The host's clock, ns: CLOCK_MONOTONIC live, the replayed tick's time in a backtest."""
        ...

    def submit(self, symbol: str, side: str, qty: int, price: float) -> str | None:
        """Send an order; its id, or None when the host refused it (a same-side order for the
        symbol is still in flight, the price is stale, the symbol and side are backing off
        after a reject). Refusals are counted and logged by the host. A side other than BUY or
        SELL, a qty <= 0 or over 2**63-1, a non-finite or non-positive price or a symbol not in
        `symbols` is a bug in the strategy and raises ValueError."""
        ...

    def position(self, symbol: str) -> int:
        """Net signed quantity: orders in flight count as filled until rejected."""
        ...

    def price(self, symbol: str) -> float | None:
        """The latest valid price seen for the symbol, or None before the first."""
        ...

    def sentiment(self, symbol: str) -> int | None:
        """The latest news sentiment (0-100) for the symbol, or None before the first."""
        ...


class Strategy:
    """Subclass this and override the hooks you need; every hook is optional.

    The host builds the strategy with its validated config (`self.config`), then calls
    on_start(ctx) once before the first event; `self.ctx` is the Context from then on.
    """

    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config
        self.ctx: Context

    def on_start(self, ctx: Context) -> None:
        """Before the first event. Call super().on_start(ctx) if you override it."""
        self.ctx = ctx

    def on_tick(self, symbol: str, price: float, tick: Tick) -> None:
        """A new price for `symbol` (finite, > 0, checked by the host)."""

    def on_news(self, symbol: str, sentiment: int) -> None:
        """News sentiment 0-100 for `symbol`; market-wide news calls it once per symbol."""

    def on_order_reply(self, order: Order, reply: OrderReply) -> None:
        """The OrderManager acked or rejected `order`; a reject has already restored the
        position."""

    def on_stop(self) -> None:
        """The host is stopping; no more events follow."""
