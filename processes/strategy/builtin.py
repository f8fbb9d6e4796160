"""The built-in strategy: a moving-average crossover confirmed by news sentiment.

It trades a symbol only when both rules agree (processes.strategy.signals): the short moving
average strictly above the long one and the sentiment strictly above `bullish` means long
`quantity`; strictly below both (`bearish` for the sentiment) means short `quantity`. Anything else
holds the position it has. An order is sent only on a change of side, so it never repeats one.
"""

from __future__ import annotations

from processes.strategy.api import BUY, SELL, Context, Strategy, StrategyConfig, Tick
from processes.strategy.signals import BUY as LONG_SIGNAL
from processes.strategy.signals import (
    NEUTRAL,
    MovingAverageCrossover,
    combine,
    order_for,
    sentiment_signal,
)

_SIDE = {LONG_SIGNAL: BUY, -LONG_SIGNAL: SELL}


class MovingAverageSentimentConfig(StrategyConfig):
    """[strategy.params] of the built-in strategy."""

    short_window: int = 5     # ticks in the short moving average
    long_window: int = 20     # ticks in the long moving average
    bullish: int = 60         # sentiment strictly above this confirms a rising trend
    bearish: int = 40         # sentiment strictly below this confirms a falling trend

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.short_window < self.long_window:
            raise ValueError("need 1 <= short_window < long_window")
        if not 0 <= self.bearish <= self.bullish <= 100:
            raise ValueError("need 0 <= bearish <= bullish <= 100")


class MovingAverageSentiment(Strategy):
    """MA crossover + sentiment, one position per symbol (+/- quantity)."""

    config_class = MovingAverageSentimentConfig
    config: MovingAverageSentimentConfig

    def on_start(self, ctx: Context) -> None:
        super().on_start(ctx)
        c = self.config
        self._trends = [MovingAverageCrossover(c.short_window, c.long_window)
                        for _ in ctx.symbols]
        self._sentiment: list[int | None] = [None] * len(ctx.symbols)
        self._index = {sym: i for i, sym in enumerate(ctx.symbols)}

    def on_news(self, symbol: str, sentiment: int) -> None:
        self._sentiment[self._index[symbol]] = sentiment

    def on_tick(self, symbol: str, price: float, tick: Tick) -> None:
        i = tick.index
        trend = self._trends[i].update(price)   # every tick feeds the averages
        if trend == NEUTRAL:
            return
        c = self.config
        signal = combine(trend, sentiment_signal(self._sentiment[i], c.bullish, c.bearish))
        if signal == NEUTRAL:
            return
        side, qty = order_for(signal, self.ctx.position(symbol), c.quantity)
        if qty:
            self.ctx.submit(symbol, _SIDE[side], qty, price)
