"""Trade on the news alone: long on very good news, short on very bad news.

    python main.py --set strategy.class=examples.sentiment:SentimentOnly \
                   --set strategy.params.threshold=75

The moving averages play no part: the last sentiment decides, and the position follows it.
"""

from __future__ import annotations

from processes.strategy.api import BUY, SELL, Strategy, StrategyConfig, Tick


class SentimentOnlyConfig(StrategyConfig):
    """[strategy.params]: `threshold` and the inherited `quantity`."""

    threshold: int = 80   # long above it, short below 100 - threshold, otherwise hold

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 50 <= self.threshold <= 100:
            raise ValueError("threshold must be 50..100")


class SentimentOnly(Strategy):
    config_class = SentimentOnlyConfig
    config: SentimentOnlyConfig

    def on_news(self, symbol: str, sentiment: int) -> None:
        # News can arrive before the first price: then there is nothing to price an order at,
        # and on_tick catches up when the price comes.
        self._trade(symbol, sentiment)

    def on_tick(self, symbol: str, price: float, tick: Tick) -> None:
        sentiment = self.ctx.sentiment(symbol)
        if sentiment is not None:
            self._trade(symbol, sentiment)

    def _trade(self, symbol: str, sentiment: int) -> None:
        limit = self.config.threshold
        target = (self.config.quantity if sentiment > limit else
                  -self.config.quantity if sentiment < 100 - limit else None)
        price = self.ctx.price(symbol)
        if target is None or price is None:
            return
        # The host counts an order in flight as filled, so this difference is zero once an
        # order is out: asking again on the next tick sends nothing.
        diff = target - self.ctx.position(symbol)
        if diff:
            self.ctx.submit(symbol, BUY if diff > 0 else SELL, abs(diff), price)
