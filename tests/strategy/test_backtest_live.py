"""Live replay vs backtest: data/sample_prices.csv through the real four processes makes the
orders the backtester makes on what the live strategy saw, in the same order.

The book holds the latest price per symbol, so a Strategy (or a Gateway) descheduled for longer
than two rows' spacing sees the later price in place of both: the live inputs can be the file
minus superseded prices. The live strategy therefore records a tape of what its host handed it
(tests/strategy/tape_strategy.py), and the test checks two things that hold on any machine load:
the tape is the file with at most superseded prices missing (no price lost, none reordered, every
news item), and the backtester run on the tape makes exactly the live orders. When nothing was
superseded the tape is the file, and the live orders are the backtest of the file itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stackutil import make_config, wait_until

from processes.shared import telemetry
from processes.shared.market_file import Event, load_events
from processes.strategy import backtest
from processes.strategy.builtin import MovingAverageSentiment, MovingAverageSentimentConfig
from processes.supervisor.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample_prices.csv"
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA"]
# The faster the replay, the more prices a descheduled process sees superseded; the checks below
# hold for any number of them, so the speed only sets the run time.
SPEED = 30.0

pytestmark = pytest.mark.timeout(120)


def _stats(tmp_path: Path, name: str) -> dict:
    return telemetry.read_snapshot(tmp_path / "logs" / "stats" / f"{name}.json") or {}


def _orders(result: backtest.BacktestResult) -> list[tuple]:
    return [(o.symbol, o.side, o.qty, o.price) for o in result.orders]


def _run(events: list[Event]) -> backtest.BacktestResult:
    return backtest.Backtest(MovingAverageSentiment, MovingAverageSentimentConfig(), SYMBOLS,
                             "strat-1").run(events)


def _superseded_only(file_prices: list[float], taped: list[float]) -> bool:
    """`taped` is `file_prices` in order with some prices missing, each followed in the file by
    a later one (the book replaced it), and the last one present."""
    k = 0
    for i, price in enumerate(file_prices):
        if k < len(taped) and taped[k] == price:
            k += 1
        elif i == len(file_prices) - 1:
            return False
    return k == len(taped)


def test_a_live_replay_makes_the_backtests_orders(tmp_path):
    events, report = load_events(SAMPLE, SYMBOLS)
    from_file = _orders(_run(events))
    assert len(from_file) >= 20
    tape = tmp_path / "tape.jsonl"
    cfg = make_config(tmp_path, **{"gateway.csv": str(SAMPLE), "gateway.csv_speed": SPEED,
                                   "gateway.csv_loop": False, "logging.stats_interval": 0.2,
                                   "logging.console": False,
                                   "strategy.class": "tape_strategy:TapedMovingAverageSentiment",
                                   "strategy.params": {"tape": str(tape)}})
    stack = Stack(cfg)
    try:
        stack.start()
        # The whole file, then a Strategy snapshot taken after the last row had time to pass
        # through, with nothing left waiting for an ack.
        budget = report.span_s / SPEED + 60
        wait_until(lambda: _stats(tmp_path, "gateway").get("counters", {}).get("replay_done")
                   and _stats(tmp_path, "gateway")["counters"].get("replay_news_done"),
                   budget, interval=0.1, what="the replay to finish")
        done_at = _stats(tmp_path, "gateway")["time"]
        wait_until(lambda: _stats(tmp_path, "strategy").get("time", 0) > done_at + 1.0
                   and _stats(tmp_path, "strategy")["counters"].get("pending") == 0, 30,
                   interval=0.1, what="the strategy to settle after the replay")
    finally:
        stack.stop()

    seen = [json.loads(line) for line in tape.read_text().splitlines()]
    taped = [Event(float(i), e["symbol"], e.get("price"), e.get("sentiment"))
             for i, e in enumerate(seen)]
    for symbol in SYMBOLS:
        file_prices = [e.price for e in events if e.symbol == symbol and e.price is not None]
        prices = [e.price for e in taped if e.symbol == symbol and e.price is not None]
        assert _superseded_only(file_prices, prices), (
            f"{symbol}: the strategy's prices are not the file's minus superseded ones")
        file_news = [e.sentiment for e in events if e.symbol in (symbol, None)
                     and e.sentiment is not None]
        news = [e.sentiment for e in taped if e.symbol == symbol and e.sentiment is not None]
        assert news == file_news, f"{symbol}: news lost or reordered"

    live = [json.loads(line) for line in (tmp_path / "orders.jsonl").read_text().splitlines()
            if line.strip()]
    got = [(o["symbol"], o["side"], o["qty"], o["price"]) for o in live]
    assert len(got) >= 20
    assert got == _orders(_run(taped))
    superseded = sum(e.price is not None for e in events) - sum(e.price is not None for e in taped)
    if not superseded:
        assert got == from_file
