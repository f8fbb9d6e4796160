"""The Strategy API in-process: a StrategyHost fed synthetic ticks, news and replies directly (no
processes, no sockets: its dialers are never started), and the loader's errors."""

from __future__ import annotations

import logging
import math
import random
import time
from fractions import Fraction

import pytest
from stackutil import make_config, wait_until

from ext import SharedPriceBook
from processes.shared import config
from processes.shared.protocol import Ack, Reject
from processes.strategy import host as host_mod
from processes.strategy.api import BUY, SELL, OrderReply, Strategy, StrategyConfig
from processes.strategy.builtin import MovingAverageSentiment, MovingAverageSentimentConfig
from processes.strategy.host import StrategyHost
from processes.strategy.loader import load_strategy
from reactor import Reactor

pytestmark = pytest.mark.timeout(30)


class Recording(Strategy):
    """Records every hook; `action` (set by a test) runs in on_tick."""

    def on_start(self, ctx) -> None:
        super().on_start(ctx)
        self.events: list[tuple] = []
        self.action = None

    def on_tick(self, symbol, price, tick) -> None:
        self.events.append(("tick", symbol, price, tick.index))
        if self.action is not None:
            self.action(symbol, price)

    def on_news(self, symbol, sentiment) -> None:
        self.events.append(("news", symbol, sentiment))

    def on_order_reply(self, order, reply) -> None:
        self.events.append(("reply", order.id, reply.kind, self.ctx.position(order.symbol)))


class Exploding(Strategy):
    def on_tick(self, symbol, price, tick) -> None:
        raise RuntimeError("boom")

    def on_news(self, symbol, sentiment) -> None:
        raise KeyError(symbol)


@pytest.fixture
def make_host(tmp_path):
    """StrategyHost(s) on a reactor that never runs; on_start already called."""
    made: list[tuple[StrategyHost, Reactor]] = []

    def make(cls: str = "tests_strategy_api:Recording", **overrides) -> StrategyHost:
        cfg = make_config(tmp_path, **{"market.symbols": "AAPL,MSFT", "strategy.class": cls,
                                       **overrides})
        reactor = Reactor()
        host = StrategyHost(reactor, cfg)
        host.strategy.ctx = host
        host._call("on_start", host)
        made.append((host, reactor))
        return host

    yield make
    for host, reactor in made:
        host.close()
        reactor.close()


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """Make this module's strategies importable by a strategy.class path."""
    import sys
    monkeypatch.setitem(sys.modules, "tests_strategy_api", sys.modules[__name__])


def tick(host: StrategyHost, symbol: str, price: float, age_s: float = 0.0) -> None:
    host._on_tick(host.symbols.index(symbol), price, time.monotonic_ns() - int(age_s * 1e9), 0)


def news(host: StrategyHost, symbol: str | None, value: int) -> None:
    host._on_news(memoryview(b"%d" % value if symbol is None else b"%s,%d" % (symbol.encode(),
                                                                            value)))


def reply(host: StrategyHost, order_id: str, kind: str, reason: str = "kill switch") -> None:
    order = host.orders_out.pending.pop(order_id)
    msg = Ack(order_id, 1) if kind == "ack" else Reject(order_id, reason)
    host._on_reply(msg, order)


def orders(host: StrategyHost) -> list[tuple[str, str, int]]:
    return [(o.side, o.symbol, o.qty) for o in host.orders_out.pending.values()]


# --- the built-in rule, exactly ---------------------------------------------------------------

BUILTIN = "processes.strategy.builtin:MovingAverageSentiment"


def builtin(make_host, **params) -> StrategyHost:
    base = {"short_window": 2, "long_window": 4, **params}
    return make_host(BUILTIN, **{f"strategy.params.{k}": v for k, v in base.items()})


def test_builtin_moving_averages_must_differ_strictly(make_host):
    host = builtin(make_host)
    news(host, "AAPL", 90)
    for _ in range(6):
        tick(host, "AAPL", 100.0)          # short MA == long MA: no order (>= would order)
    assert orders(host) == []
    tick(host, "AAPL", 100.01)             # short MA > long MA
    assert orders(host) == [("BUY", "AAPL", 10)]


def test_builtin_falling_averages_must_differ_strictly(make_host):
    host = builtin(make_host)
    news(host, "AAPL", 10)
    for _ in range(6):
        tick(host, "AAPL", 100.0)          # equal averages: no SELL (<= would sell)
    assert orders(host) == []
    tick(host, "AAPL", 99.99)
    assert orders(host) == [("SELL", "AAPL", 10)]


@pytest.mark.parametrize("at, beyond, step, side", [(60, 61, +0.05, "BUY"),
                                                     (40, 39, -0.05, "SELL")])
def test_builtin_sentiment_must_pass_its_threshold_strictly(make_host, at, beyond, step, side):
    host = builtin(make_host)
    news(host, "AAPL", at)                 # at the threshold: neutral (>= / <= would trade)
    price = 100.0
    for _ in range(10):
        price += step
        tick(host, "AAPL", price)
    assert orders(host) == []
    news(host, "AAPL", beyond)
    tick(host, "AAPL", price + step)
    assert orders(host) == [(side, "AAPL", 10)]


def test_builtin_targets_a_position_and_never_repeats(make_host):
    host = builtin(make_host, quantity=7)
    news(host, None, 90)                   # market-wide news reaches both symbols
    price = 100.0
    for _ in range(10):
        price += 0.05
        tick(host, "AAPL", price)
    assert orders(host) == [("BUY", "AAPL", 7)] and host.position("AAPL") == 7
    news(host, "AAPL", 10)
    for _ in range(10):
        price -= 0.05
        tick(host, "AAPL", price)
    assert orders(host) == [("BUY", "AAPL", 7), ("SELL", "AAPL", 14)]   # long -> short: 2x
    assert host.position("AAPL") == -7 and host.position("MSFT") == 0


def reference_orders(prices, sentiments, short, long, bullish, bearish, qty):
    """The rule written out independently: exact averages, strict comparisons."""
    out, position = [], 0
    for k, sentiment in enumerate(sentiments):
        if k + 1 < long:
            continue
        cents = [Fraction(round(p * 1_000_000)) for p in prices[k + 1 - long:k + 1]]
        s_ma, l_ma = sum(cents[-short:]) / short, sum(cents) / long
        trend = 1 if s_ma > l_ma else -1 if s_ma < l_ma else 0
        news_sig = 0 if sentiment is None else 1 if sentiment > bullish else \
            -1 if sentiment < bearish else 0
        if trend == 0 or trend != news_sig or (position > 0) == (trend > 0) and position:
            continue
        out.append(("BUY" if trend > 0 else "SELL", abs(trend * qty - position)))
        position = trend * qty
    return out


def test_builtin_matches_the_rule_on_a_random_walk(make_host):
    rng = random.Random(7)
    host = builtin(make_host, short_window=3, long_window=7, bullish=55, bearish=45)
    prices, sentiments, sentiment = [], [], None
    got = []
    price = 100.0
    for _ in range(3000):
        if rng.random() < 0.05:
            sentiment = rng.choice([45, 55, rng.randint(0, 100)])  # thresholds often exactly
            news(host, "MSFT", sentiment)
        price = round(price + rng.choice([-0.01, 0.0, 0.01]), 2)
        prices.append(price)
        sentiments.append(sentiment)
        tick(host, "MSFT", price)
        for oid, order in list(host.orders_out.pending.items()):   # the venue acks at once
            got.append((order.side, order.qty))
            reply(host, oid, "ack")
    assert len(got) > 20
    assert got == reference_orders(prices, sentiments, 3, 7, 55, 45, 10)


# --- the host's rules -------------------------------------------------------------------------

def test_position_moves_at_submit_and_a_reject_restores_it_then_backs_off(make_host, monkeypatch,
                                                                         caplog):
    monkeypatch.setattr(host_mod, "REJECT_BACKOFF_S", 0.05)
    host = make_host()
    strat = host.strategy
    tick(host, "AAPL", 101.0)
    tick(host, "MSFT", 50.0)
    strat.events.clear()
    oid = host.submit("AAPL", BUY, 5, 101.234)
    assert oid and host.position("AAPL") == 5
    assert host.orders_out.pending[oid].price == 101.23
    caplog.set_level(logging.INFO)
    reply(host, oid, "reject")
    assert host.position("AAPL") == 0
    assert strat.events[-1] == ("reply", oid, "reject", 0), "hook runs after the restore"
    # Backing off: the same symbol and side is refused, again and again, with no new line.
    for _ in range(5):
        assert host.submit("AAPL", BUY, 5, 101.0) is None
    assert host.refused["backoff"] == 5 and host.position("AAPL") == 0
    assert host.submit("AAPL", SELL, 5, 101.0), "the other side is not backing off"
    assert host.submit("MSFT", BUY, 5, 50.0), "nor another symbol"
    starts = [r for r in caplog.records if "backing off BUY AAPL for 0.05s" in r.getMessage()]
    assert len(starts) == 1
    wait_until(lambda: host.submit("AAPL", BUY, 5, 101.0) is not None, 5, what="backoff end")
    assert sum("backoff of BUY AAPL over" in r.getMessage() for r in caplog.records) == 1
    # A second reject in a row doubles the wait; an ack resets it.
    second = next(o.id for o in host.orders_out.pending.values()
                  if (o.symbol, o.side) == ("AAPL", BUY))
    reply(host, second, "reject")
    assert any("backing off BUY AAPL for 0.1s" in r.getMessage() for r in caplog.records)
    wait_until(lambda: host.submit("AAPL", BUY, 5, 101.0) is not None, 5, what="backoff end")
    third = next(o.id for o in host.orders_out.pending.values()
                 if (o.symbol, o.side) == ("AAPL", BUY))
    reply(host, third, "ack")
    assert host.position("AAPL") == 5 - 5, "the BUY is acked; the SELL is still in flight"
    assert host._backoff_next[1] == 0.0
    assert strat.events[-1][2] == "ack"


def test_a_same_side_order_in_flight_refuses_the_next_and_logs_once(make_host, caplog):
    host = make_host()
    tick(host, "AAPL", 100.0)
    caplog.set_level(logging.INFO)
    first = host.submit("AAPL", BUY, 1, 100.0)
    assert all(host.submit("AAPL", BUY, 1, 100.0) is None for _ in range(10))
    assert host.refused["pending"] == 10 and host.position("AAPL") == 1
    assert sum("refusing BUY AAPL" in r.getMessage() for r in caplog.records) == 1
    reply(host, first, "ack")
    assert host.submit("AAPL", BUY, 1, 100.0) is not None
    assert host.position("AAPL") == 2


def test_a_stale_price_is_refused(make_host):
    host = make_host(**{"strategy.max_price_age": 1.0})
    strat = host.strategy
    strat.action = lambda sym, price: strat.events.append(("sent", host.submit(sym, BUY, 1,
                                                                                price)))
    tick(host, "AAPL", 100.0, age_s=5.0)
    assert strat.events[-1] == ("sent", None) and host.refused["stale"] == 1
    tick(host, "AAPL", 100.0)
    assert strat.events[-1][1] is not None


def test_no_order_before_the_symbols_first_price(make_host):
    """An order from on_start or on_news, before any valid tick, has no price to be fresh."""
    host = make_host(**{"strategy.max_price_age": 1.0})
    assert host.submit("MSFT", BUY, 1, 100.0) is None and host.refused["stale"] == 1
    tick(host, "MSFT", 100.0)
    assert host.submit("MSFT", BUY, 1, 100.0) is not None


def test_a_price_that_rounds_to_zero_cents_raises(make_host):
    host = make_host()
    tick(host, "AAPL", 1.0)
    with pytest.raises(ValueError, match="0.00"):
        host.submit("AAPL", BUY, 1, 0.004)
    assert host.orders == 0


@pytest.mark.parametrize("args", [("AAPL", "buy", 1, 1.0), ("AAPL", BUY, 0, 1.0),
                                  ("AAPL", BUY, 1.5, 1.0), ("AAPL", BUY, True, 1.0),
                                  ("AAPL", BUY, 1, math.nan), ("AAPL", BUY, 1, math.inf),
                                  ("AAPL", BUY, 1, 0.0), ("AAPL", BUY, 1, -3.0),
                                  ("GOOG", BUY, 1, 1.0)])
def test_an_invalid_submit_raises(make_host, args):
    host = make_host()
    with pytest.raises(ValueError):
        host.submit(*args)
    assert host.orders == 0 and host.position("AAPL") == 0


def test_a_hook_that_raises_is_counted_not_fatal(make_host, caplog):
    host = make_host("tests_strategy_api:Exploding")
    for k in range(20):
        tick(host, "AAPL", 100.0 + k)
    news(host, "MSFT", 50)
    assert host.strategy_errors == 21 and host.decisions == 20
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == host_mod.LOGGED_PROBLEMS
    assert host.tick_to_decision.count == 20


def test_bad_prices_never_reach_the_strategy(make_host):
    host = make_host()
    for bad in (math.nan, math.inf, -math.inf, 0.0, -1.0):
        host._on_tick(0, bad, time.monotonic_ns(), 0)
    assert host.bad_prices == 5 and host.strategy.events == [] and host.price("AAPL") is None
    tick(host, "AAPL", 12.5)
    assert host.strategy.events == [("tick", "AAPL", 12.5, 0)] and host.price("AAPL") == 12.5


def test_news_reaches_each_traded_symbol_and_market_wide_news_every_one(make_host):
    host = make_host(**{"market.symbols": "AAPL,MSFT,GOOG", "strategy.symbols": "MSFT,GOOG"})
    assert host.symbols == ("MSFT", "GOOG")
    news(host, "AAPL", 10)                 # not traded
    news(host, "MSFT", 70)
    news(host, None, 30)                   # market-wide: once per traded symbol
    assert host.strategy.events == [("news", "MSFT", 70), ("news", "MSFT", 30),
                                    ("news", "GOOG", 30)]
    assert host.sentiment("MSFT") == 30 and host.sentiment("GOOG") == 30


def test_only_traded_symbols_tick_through_the_shared_book(make_host):
    """The real hot path: the book's reader, the slot map made at attach."""
    host = make_host(**{"strategy.symbols": "MSFT"})
    book = SharedPriceBook(["AAPL", "MSFT"], name=host.cfg.market.shm_name, create=True)
    try:
        assert host.segment.poll(), host.segment.status   # attaches: _adopt builds the slot map
        assert host._slot == [-1, 0] and host.book is host.segment.book
        book.update("AAPL", 10.0, time.monotonic_ns(), 1)
        book.update("MSFT", 20.0, time.monotonic_ns(), 1)
        wait_until(lambda: host.poll() or host.ticks >= 2, 5, what="ticks")
        assert host.strategy.events == [("tick", "MSFT", 20.0, 0)]
        assert host.decisions == 1 and host.tick_to_decision.count == 1
    finally:
        host.segment.close()
        book.close()
        book.unlink()


def test_tick_to_decision_is_recorded_once_per_tick_at_the_first_submit(make_host):
    host = make_host()
    strat = host.strategy
    strat.action = lambda sym, price: (host.submit(sym, BUY, 1, price),
                                       host.submit(sym, SELL, 1, price))
    tick(host, "AAPL", 100.0)
    tick(host, "MSFT", 100.0)
    assert host.tick_to_decision.count == 2 == host.decisions
    assert all(o.tick_ns for o in host.orders_out.pending.values())


def test_the_decision_latency_is_now_minus_the_ticks_send_time(make_host, monkeypatch):
    """The tick -> decision sample of a tick that ordered: from its Gateway send time to the
    submit, on our clock (between the times taken around the tick)."""
    host = make_host()
    samples: list[int] = []
    monkeypatch.setattr(host.tick_to_decision, "record", samples.append)
    host.strategy.action = lambda sym, price: host.submit(sym, BUY, 1, price)
    sent = time.monotonic_ns() - 5_000_000            # sent 5 ms ago
    before = time.monotonic_ns()
    host._on_tick(host.symbols.index("AAPL"), 100.0, sent, 7)
    after = time.monotonic_ns()
    assert len(samples) == 1 and len(host.orders_out.pending) == 1
    assert before - sent <= samples[0] <= after - sent


def test_an_ack_is_timed_from_when_its_bytes_were_read(make_host, monkeypatch):
    """order -> ack and tick -> ack end at the reply's read time the OrderClient passes (its
    decoding is our handling, not the OrderManager's latency), else at now."""
    host = make_host()
    got: dict[str, list[int]] = {"order": [], "tick": []}
    monkeypatch.setattr(host.order_to_ack, "record", got["order"].append)
    monkeypatch.setattr(host.tick_to_ack, "record", got["tick"].append)
    host.strategy.action = lambda sym, price: host.submit(sym, BUY, 1, price)
    tick(host, "AAPL", 100.0)
    (order,) = host.orders_out.pending.values()
    host._on_reply(Ack(order.id, 1), host.orders_out.pending.pop(order.id),
                   order.sent_ns + 1_234)
    assert got == {"order": [1_234], "tick": [order.sent_ns + 1_234 - order.tick_ns]}
    host.strategy.action = lambda sym, price: host.submit(sym, SELL, 1, price)
    tick(host, "MSFT", 100.0)
    (order,) = host.orders_out.pending.values()
    before = time.monotonic_ns()
    host._on_reply(Ack(order.id, 2), host.orders_out.pending.pop(order.id))   # no read time
    after = time.monotonic_ns()
    assert before - order.sent_ns <= got["order"][1] <= after - order.sent_ns


def test_order_reply_shape():
    assert OrderReply("ack", 3).accepted and not OrderReply("reject", reason="x").accepted


# --- the loader -------------------------------------------------------------------------------

class Threshold(Strategy):
    class config_class(StrategyConfig):   # noqa: N801 - a nested config, as a user may write
        threshold: int = 80


@pytest.mark.parametrize("cls, params, message", [
    ("tests_strategy_api:Threshold", {"threshold": "high"},
     "strategy.params.threshold: Expected `int`, got `str`"),
    ("tests_strategy_api:Threshold", {"thresh": 1}, "strategy.params: unknown key 'thresh'"),
    ("tests_strategy_api:Threshold", {"quantity": 0}, "strategy.params: quantity must be > 0"),
    ("examples.nope:X", {}, "strategy.class: no module named 'examples.nope'"),
    ("examples.sentiment:Nope", {}, "strategy.class: module 'examples.sentiment' has no 'Nope'"),
    ("processes.strategy.api:Tick", {}, "is not a subclass of"),
    (BUILTIN, {"short_window": 20}, "strategy.params: need 1 <= short_window < long_window"),
    (BUILTIN, {"bearish": 70}, "strategy.params: need 0 <= bearish <= bullish <= 100"),
])
def test_loader_errors_name_the_key(cls, params, message):
    with pytest.raises(config.ConfigError) as err:
        load_strategy(config.Strategy(cls=cls, params=params), "strategy")
    assert message in str(err.value)


def test_loader_converts_cli_strings_and_names_the_table():
    cls, params = load_strategy(config.Strategy(cls=BUILTIN, params={"short_window": "3"}))
    assert cls is MovingAverageSentiment
    assert params == MovingAverageSentimentConfig(short_window=3)
    with pytest.raises(config.ConfigError, match=r"^strategies\.b\.params\.quantity: "):
        load_strategy(config.Strategy(cls=BUILTIN, params={"quantity": "x"}), "strategies.b")


def test_examples_load_with_their_own_configs():
    for spec in ("examples.sentiment:SentimentOnly", "examples.reply_aware:Breakout"):
        cls, params = load_strategy(config.Strategy(cls=spec))
        assert issubclass(cls, Strategy) and isinstance(params, cls.config_class)


def test_sentiment_only_trades_on_news_alone(make_host):
    host = make_host("examples.sentiment:SentimentOnly")
    news(host, "AAPL", 95)
    assert orders(host) == [], "no price yet: nothing to price the order at"
    tick(host, "AAPL", 10.0)
    tick(host, "AAPL", 10.0)
    assert orders(host) == [("BUY", "AAPL", 10)]
    news(host, "AAPL", 5)
    assert orders(host) == [("BUY", "AAPL", 10), ("SELL", "AAPL", 20)]
    assert host.position("AAPL") == -10


def test_breakout_halves_its_size_after_a_reject(make_host, monkeypatch):
    monkeypatch.setattr(host_mod, "REJECT_BACKOFF_S", 0.01)
    host = make_host("examples.reply_aware:Breakout", **{"strategy.params.lookback": 3})
    for p in (10.0, 10.1, 10.2, 10.3):
        tick(host, "AAPL", p)
    [(oid, order)] = host.orders_out.pending.items()
    assert (order.side, order.qty) == (BUY, 10)
    reply(host, oid, "reject")
    assert host.position("AAPL") == 0
    price = [10.3]

    def rising() -> bool:
        price[0] += 0.1
        tick(host, "AAPL", price[0])
        return bool(host.orders_out.pending)

    wait_until(rising, 5, what="the next breakout order")
    assert [o.qty for o in host.orders_out.pending.values()] == [5]


# --- what the host hands over, exactly --------------------------------------------------------

class Replies(Strategy):
    """Keeps every OrderReply it is given."""

    def on_start(self, ctx) -> None:
        super().on_start(ctx)
        self.replies: list[tuple[str, OrderReply]] = []

    def on_order_reply(self, order, reply) -> None:
        self.replies.append((order.id, reply))


def test_the_strategy_gets_the_ack_number_and_the_reject_reason(make_host):
    host = make_host("tests_strategy_api:Replies")
    tick(host, "AAPL", 100.0)
    tick(host, "MSFT", 50.0)
    buy = host.submit("AAPL", BUY, 3, 100.0)
    sell = host.submit("MSFT", SELL, 2, 50.0)
    host._on_reply(Ack(buy, 42), host.orders_out.pending.pop(buy))
    long_reason = "risk: " + "x" * 400
    host._on_reply(Reject(sell, long_reason), host.orders_out.pending.pop(sell))
    assert host.strategy.replies == [(buy, OrderReply("ack", 42)),
                                     (sell, OrderReply("reject", reason=long_reason[:300]))]
    assert (host.position("AAPL"), host.position("MSFT")) == (3, 0)
    assert (host.orders, host.backoffs) == (2, 1)
    other = host.submit("AAPL", SELL, 1, 100.0)
    host._on_reply(Reject(other, "no"), host.orders_out.pending.pop(other))
    assert (host.orders, host.backoffs, host.position("AAPL")) == (3, 2, 3)
    assert host.position("GOOG") == 0          # not traded: flat, not an error


def test_orders_carry_the_host_name_consecutive_ids_and_their_tick(make_host):
    host = make_host()
    strat = host.strategy
    tick(host, "MSFT", 10.0)
    sent = []
    strat.action = lambda sym, price: sent.append(host.submit(sym, BUY, 1, price))
    host._on_tick(0, 100.0, time.monotonic_ns(), 77)     # tick_seq 77
    strat.action = None
    outside = host.submit("MSFT", SELL, 1, 10.0)          # outside a tick: no tick stamps
    first, second = host.orders_out.pending[sent[0]], host.orders_out.pending[outside]
    assert first.client == second.client == host.name
    assert (first.id, second.id) == (f"{host._id_prefix}-1", f"{host._id_prefix}-2")
    with pytest.raises(ValueError, match=f"is not traded by {host.name} "):
        host.submit("GOOG", BUY, 1, 1.0)
    assert (first.tick_seq, second.tick_seq, second.tick_ns) == (77, 0, 0) and first.tick_ns
    assert first.sent_ns and second.sent_ns >= first.sent_ns


def test_a_plain_feed_without_send_times_is_judged_by_the_book_state(make_host):
    """Ticks of a plain feed carry no send time: the price is fresh unless the book's watch
    marked the symbol stale (a stamp of 0 is not 'infinitely old')."""
    host = make_host(**{"strategy.max_price_age": 1.0})
    strat = host.strategy
    sent = []
    strat.action = lambda sym, price: sent.append(host.submit(sym, BUY, 1, price))
    host._on_tick(0, 100.0, 0, 0)
    assert sent[0] is not None and host.refused["stale"] == 0
    reply(host, sent[0], "ack")
    host.stale[0] = True
    host._on_tick(0, 100.5, 0, 0)
    assert sent[1] is None and host.refused["stale"] == 1
