"""The edges of the built-in rule and of what a strategy may submit: each bound on both sides,
with the exact error a user is shown."""

from __future__ import annotations

import pytest

from processes.strategy.api import BUY, SELL, StrategyConfig, check_submit
from processes.strategy.builtin import MovingAverageSentimentConfig
from processes.strategy.signals import BUY as LONG  # the signals' +1 / -1, not the sides
from processes.strategy.signals import NEUTRAL, MovingAverageCrossover, order_for
from processes.strategy.signals import SELL as SHORT

pytestmark = pytest.mark.timeout(30)
SYMBOLS = ("AAPL", "MSFT")
INDEX = {"AAPL": 0, "MSFT": 1}


@pytest.mark.parametrize("short, long", [(0, 2), (2, 2), (3, 2), (-1, 5)])
def test_crossover_windows_must_be_1_or_more_and_strictly_ordered(short, long):
    with pytest.raises(ValueError) as exc:
        MovingAverageCrossover(short, long)
    assert str(exc.value) == "need 1 <= short < long"


def test_the_smallest_crossover_trades():
    ma = MovingAverageCrossover(1, 2)
    assert (ma.update(10.0), ma.ready) == (NEUTRAL, False)
    assert (ma.update(11.0), ma.ready) == (LONG, True)
    assert ma.update(10.0) == SHORT


@pytest.mark.parametrize("signal, position, out", [
    (LONG, 1, (NEUTRAL, 0)), (SHORT, -1, (NEUTRAL, 0)),        # already on that side, by one
    (LONG, -1, (LONG, 11)), (SHORT, 1, (SHORT, 11)),           # flip from one lot
    (LONG, 0, (LONG, 10)), (NEUTRAL, 5, (NEUTRAL, 0)),
])
def test_order_for_at_a_position_of_one(signal, position, out):
    assert order_for(signal, position, 10) == out


@pytest.mark.parametrize("params", [
    {"short_window": 1, "long_window": 2}, {"bearish": 0, "bullish": 100},
    {"bearish": 50, "bullish": 50}, {"quantity": 1},
])
def test_builtin_config_bounds_that_are_allowed(params):
    cfg = MovingAverageSentimentConfig(**params)
    assert all(getattr(cfg, k) == v for k, v in params.items())


@pytest.mark.parametrize("params, why", [
    ({"short_window": 0, "long_window": 2}, "need 1 <= short_window < long_window"),
    ({"short_window": 4, "long_window": 4}, "need 1 <= short_window < long_window"),
    ({"bearish": -1}, "need 0 <= bearish <= bullish <= 100"),
    ({"bullish": 101}, "need 0 <= bearish <= bullish <= 100"),
    ({"bearish": 61, "bullish": 60}, "need 0 <= bearish <= bullish <= 100"),
    ({"quantity": 0}, "quantity must be > 0"),
])
def test_builtin_config_bounds_that_are_not(params, why):
    with pytest.raises(ValueError) as exc:
        MovingAverageSentimentConfig(**params)
    assert str(exc.value) == why


def test_base_config_quantity_of_one_is_allowed():
    assert StrategyConfig(quantity=1).quantity == 1
    with pytest.raises(ValueError, match="^quantity must be > 0$"):
        StrategyConfig(quantity=0)


def submit(symbol="AAPL", side=BUY, qty=1, price=100.0):
    return check_submit("s1", SYMBOLS, INDEX, symbol, side, qty, price)


def test_check_submit_accepts_the_smallest_order_and_rounds_to_the_cent():
    assert submit(price=0.5) == (0, 1, 0.5)
    assert submit("MSFT", SELL, 3, 0.014) == (1, -1, 0.01)
    assert submit(price=7) == (0, 1, 7.0)


@pytest.mark.parametrize("args, why", [
    ({"symbol": "GOOG"}, "submit: 'GOOG' is not traded by s1 (strategy.symbols: AAPL, MSFT)"),
    ({"side": "buy"}, "submit: side 'buy' is not BUY or SELL"),
    ({"qty": 0}, "submit: qty 0 is not an int > 0 and <= 9223372036854775807"),
    ({"qty": 2 ** 63},
     "submit: qty 9223372036854775808 is not an int > 0 and <= 9223372036854775807"),
    ({"qty": 1.0}, "submit: qty 1.0 is not an int > 0 and <= 9223372036854775807"),
    ({"price": 0.0}, "submit: price 0.0 is not a finite number > 0"),
    ({"price": float("inf")}, "submit: price inf is not a finite number > 0"),
    ({"price": 0.004}, "submit: price 0.004 is 0.00 to the cent"),
])
def test_check_submit_says_what_is_wrong(args, why):
    with pytest.raises(ValueError) as exc:
        submit(**args)
    assert str(exc.value) == why
