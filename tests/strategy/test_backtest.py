"""The backtester: the live host's rules on recorded events, exact orders on a tiny file,
determinism, and the shipped sample trading with the built-in rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processes.shared.market_file import load_events, parse_events
from processes.strategy import backtest
from processes.strategy.api import BUY, SELL, OrderReply, Strategy, StrategyConfig, Tick
from processes.strategy.builtin import MovingAverageSentiment, MovingAverageSentimentConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample_prices.csv"
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA"]


class Recorder(Strategy):
    """Buys on news above 50, sells on news below; records what the host shows it."""

    def on_start(self, ctx) -> None:
        super().on_start(ctx)
        self.seen: list[tuple] = [("start", ctx.now_ns())]

    def on_tick(self, symbol: str, price: float, tick: Tick) -> None:
        self.seen.append(("tick", symbol, price, tick.index, tick.seq, tick.sent_ns,
                          self.ctx.now_ns()))

    def on_news(self, symbol: str, sentiment: int) -> None:
        ctx = self.ctx
        self.seen.append(("news", symbol, sentiment, ctx.position(symbol)))
        price = ctx.price(symbol)
        if price is None:
            return
        side = BUY if sentiment > 50 else SELL
        first = ctx.submit(symbol, side, 10, price)
        again = ctx.submit(symbol, side, 10, price)      # same side still in flight: refused
        self.seen.append(("submit", first is not None, again, ctx.position(symbol)))

    def on_order_reply(self, order, reply: OrderReply) -> None:
        self.seen.append(("reply", order.symbol, order.side, reply.kind, reply.order_no))

    def on_stop(self) -> None:
        self.seen.append(("stop",))


TINY = """timestamp,symbol,price,sentiment
10.0,AAPL,,70
10.1,AAPL,100.00,
10.2,AAPL,,80
10.3,MSFT,200.00,
10.4,MSFT,,20
10.5,AAPL,101.00,
10.6,MSFT,-5,
"""


def _events(text: str):
    events, report = parse_events(text.splitlines(), SYMBOLS)
    return events, report


def test_a_strategy_gets_exactly_the_expected_orders_and_host_rules():
    events, report = _events(TINY)
    assert report.bad == 1                                  # the -5 price: reported, not an event
    strategy_holder: list[Recorder] = []

    class Kept(Recorder):
        def __init__(self, config) -> None:
            super().__init__(config)
            strategy_holder.append(self)

    result = backtest.Backtest(Kept, StrategyConfig(), ["AAPL", "MSFT"], "t1").run(events)
    assert [o.line() for o in result.orders] == [
        "Order 1: BUY 10 AAPL @ 100.00", "Order 2: SELL 10 MSFT @ 200.00"]
    assert [(o.order_no, o.id, o.ts) for o in result.orders] == [
        (1, "t1-bt-1", 10.2), (2, "t1-bt-2", 10.4)]
    seen = strategy_holder[0].seen
    assert seen == [
        ("start", 0),
        ("news", "AAPL", 70, 0),                             # no price yet: no order
        ("tick", "AAPL", 100.0, 0, 1, 10_100_000_000, 10_100_000_000),
        ("news", "AAPL", 80, 0),
        ("submit", True, None, 10),                          # position moved at submit
        ("reply", "AAPL", BUY, "ack", 1),                    # acked before the next event
        ("tick", "MSFT", 200.0, 1, 1, 10_300_000_000, 10_300_000_000),
        ("news", "MSFT", 20, 0),
        ("submit", True, None, -10),
        ("reply", "MSFT", SELL, "ack", 2),
        ("tick", "AAPL", 101.0, 0, 2, 10_500_000_000, 10_500_000_000),
        ("stop",),
    ]
    assert result.refusals == 2 and result.errors == 0
    assert (result.ticks, result.news) == (3, 3)
    # PnL as the dashboard computes it, marked at the last prices (AAPL 101, MSFT 200).
    assert result.pnl["AAPL"] == {"position": 10, "avg_price": 100.0, "realized": 0.0,
                                  "unrealized": 10.0}
    assert result.pnl["MSFT"]["position"] == -10 and result.pnl["MSFT"]["unrealized"] == 0.0
    assert result.totals == {"realized": 0.0, "unrealized": 10.0, "total": 10.0}


def test_submit_refuses_bugs_market_news_fans_out_and_hook_errors_are_counted():
    from processes.shared.market_file import Event

    class Buggy(Strategy):
        def on_news(self, symbol: str, sentiment: int) -> None:
            self.calls = getattr(self, "calls", [])
            self.calls.append(symbol)
            for bad in (("AAPL", "HOLD", 1, 1.0), ("AAPL", BUY, 0, 1.0),
                        ("AAPL", BUY, 1, float("nan")), ("AAPL", BUY, 1, -1.0),
                        ("GOOG", BUY, 1, 1.0), ("AAPL", BUY, True, 1.0)):
                with pytest.raises(ValueError):
                    self.ctx.submit(*bad)
            if symbol == "MSFT":
                raise RuntimeError("a bug in the hook")

    made: list[Buggy] = []

    class Kept(Buggy):
        def __init__(self, config) -> None:
            super().__init__(config)
            made.append(self)

    events = [Event(1.0, None, None, 55), Event(2.0, "AAPL", float("inf"), None),
              Event(3.0, "AAPL", 0.0, None)]
    result = backtest.Backtest(Kept, StrategyConfig(), ["AAPL", "MSFT"]).run(events)
    assert made[0].calls == ["AAPL", "MSFT"]             # market-wide: once per traded symbol
    assert result.errors == 1 and result.skipped == 2 and result.ticks == 0
    assert result.orders == []


def test_two_runs_give_the_same_orders():
    events, _ = load_events(SAMPLE, SYMBOLS)
    runs = [backtest.Backtest(MovingAverageSentiment, MovingAverageSentimentConfig(), SYMBOLS,
                              "strat-1").run(events)
            for _ in range(2)]
    assert runs[0].orders == runs[1].orders
    assert runs[0].to_json() == runs[1].to_json()


def test_the_shipped_sample_gives_tens_of_orders_with_the_builtin_rules():
    events, _ = load_events(SAMPLE, SYMBOLS)
    result = backtest.Backtest(MovingAverageSentiment, MovingAverageSentimentConfig(), SYMBOLS,
                              "strat-1").run(events)
    assert 20 <= len(result.orders) <= 99
    assert {o.symbol for o in result.orders} == set(SYMBOLS)
    assert [o.order_no for o in result.orders] == list(range(1, len(result.orders) + 1))
    for o in result.orders:
        assert o.qty in (10, 20)                          # to +-quantity: from flat or across
    assert result.refusals == 0 and result.errors == 0


def test_the_command_line(tmp_path, capsys):
    cls = "processes.strategy.builtin:MovingAverageSentiment"
    assert backtest.main(["--csv", str(SAMPLE), "--set", f"strategy.class={cls}",
                          "--set", "strategy.params.quantity=5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "strat-1" and len(out["orders"]) >= 20
    assert {o["qty"] for o in out["orders"]} <= {5, 10}
    assert set(out["pnl"]) == {"symbols", "realized", "unrealized", "total"}
    assert backtest.main(["--csv", str(SAMPLE), "--set", f"strategy.class={cls}"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Order 1: ") and "PnL: realized " in text
    assert backtest.main(["--csv", str(tmp_path / "none.csv"),
                          "--set", f"strategy.class={cls}"]) == 2
    assert "gateway.csv: cannot read" in capsys.readouterr().err
    assert backtest.main(["--csv", str(SAMPLE), "--set", "strategy.class=nope.mod:X"]) == 2
    assert "strategy.class" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`python -m processes.strategy.backtest ... | head`: the pipe closes under the report
    (here before it is written, so the write surely meets a closed pipe)."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "processes.strategy.backtest", "--csv",
                             str(SAMPLE)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=50) == 0
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
