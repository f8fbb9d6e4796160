"""Strategy rules: strict inequalities, the agreement rule, and no duplicate orders."""

from __future__ import annotations

import pytest

from processes.strategy.signals import (
    BUY,
    NEUTRAL,
    SELL,
    MovingAverageCrossover,
    combine,
    order_for,
    sentiment_signal,
)

pytestmark = pytest.mark.timeout(10)


def feed(ma: MovingAverageCrossover, prices) -> list[int]:
    return [ma.update(p) for p in prices]


def test_neutral_until_long_window_full():
    ma = MovingAverageCrossover(2, 4)
    assert feed(ma, [1.0, 2.0, 3.0]) == [NEUTRAL] * 3
    assert not ma.ready
    assert ma.update(4.0) == BUY  # short (3.5) > long (2.5)
    assert ma.ready


def test_rising_falling_and_flat():
    ma = MovingAverageCrossover(3, 5)
    assert feed(ma, [10, 11, 12, 13, 14])[-1] == BUY
    assert feed(ma, [13, 12, 11, 10, 9])[-1] == SELL
    # Flat prices: MAs equal -> strictly neither. Many updates must not drift into a signal.
    assert set(feed(ma, [100.1] * 5000)[-4000:]) == {NEUTRAL}


def test_matches_a_naive_recomputation():
    import random
    rng = random.Random(7)
    ma = MovingAverageCrossover(5, 20)
    prices: list[float] = []
    for _ in range(3000):
        p = round(rng.uniform(99, 101), 2)
        prices.append(p)
        got = ma.update(p)
        if len(prices) < 20:
            assert got == NEUTRAL
            continue
        short = sum(round(x * 1e6) for x in prices[-5:]) * 20
        long = sum(round(x * 1e6) for x in prices[-20:]) * 5
        assert got == (BUY if short > long else SELL if short < long else NEUTRAL)


def test_sentiment_thresholds_are_strict():
    assert sentiment_signal(61, 60, 40) == BUY
    assert sentiment_signal(60, 60, 40) == NEUTRAL
    assert sentiment_signal(40, 60, 40) == NEUTRAL
    assert sentiment_signal(39, 60, 40) == SELL
    assert sentiment_signal(None, 60, 40) == NEUTRAL


@pytest.mark.parametrize("trend, news, out", [
    (BUY, BUY, BUY), (SELL, SELL, SELL), (BUY, SELL, NEUTRAL), (SELL, BUY, NEUTRAL),
    (BUY, NEUTRAL, NEUTRAL), (NEUTRAL, SELL, NEUTRAL), (NEUTRAL, NEUTRAL, NEUTRAL),
])
def test_orders_only_when_both_agree(trend, news, out):
    assert combine(trend, news) == out


def test_position_prevents_duplicates():
    assert order_for(BUY, 0, 10) == (BUY, 10)
    assert order_for(BUY, 10, 10) == (NEUTRAL, 0)        # already long: no duplicate
    assert order_for(SELL, 10, 10) == (SELL, 20)         # long -> short
    assert order_for(SELL, -10, 10) == (NEUTRAL, 0)
    assert order_for(BUY, -10, 10) == (BUY, 20)
    assert order_for(NEUTRAL, 10, 10) == (NEUTRAL, 0)
