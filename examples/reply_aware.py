"""A breakout strategy that listens to the OrderManager's answers.

    python main.py --set strategy.class=examples.reply_aware:Breakout

It buys when the price rises above the highest of the last `lookback` ticks and sells when it
falls below the lowest. Acks and rejects change what it does next:
- a reject (a risk limit, the kill switch) halves its order size for that symbol, down to 1;
- an ack restores the size step by step, back up to `quantity`, and is logged as a fill.
The host already restores the position and backs off after a reject; the size is this
strategy's own answer to being told "no".
"""

from __future__ import annotations

from collections import deque

from processes.strategy.api import (
    BUY,
    SELL,
    Context,
    Order,
    OrderReply,
    Strategy,
    StrategyConfig,
    Tick,
)


class BreakoutConfig(StrategyConfig):
    """[strategy.params]: `lookback` and the inherited `quantity` (the full order size)."""

    lookback: int = 50   # ticks whose high and low make the channel

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lookback < 2:
            raise ValueError("lookback must be >= 2")


class Breakout(Strategy):
    config_class = BreakoutConfig
    config: BreakoutConfig

    def on_start(self, ctx: Context) -> None:
        super().on_start(ctx)
        n = self.config.lookback
        self._window = {sym: deque(maxlen=n) for sym in ctx.symbols}
        self._size = dict.fromkeys(ctx.symbols, self.config.quantity)

    def on_tick(self, symbol: str, price: float, tick: Tick) -> None:
        window = self._window[symbol]
        if len(window) == window.maxlen:
            high, low = max(window), min(window)
            position = self.ctx.position(symbol)
            if price > high and position <= 0:
                self.ctx.submit(symbol, BUY, self._size[symbol] - position, price)
            elif price < low and position >= 0:
                self.ctx.submit(symbol, SELL, self._size[symbol] + position, price)
        window.append(price)

    def on_order_reply(self, order: Order, reply: OrderReply) -> None:
        size = self._size[order.symbol]
        if reply.accepted:
            self._size[order.symbol] = min(self.config.quantity, size * 2)
            self.ctx.log.info("filled %s %d %s @ %.2f (#%s); position %+d", order.side,
                              order.qty, order.symbol, order.price, reply.order_no,
                              self.ctx.position(order.symbol))
        else:
            self._size[order.symbol] = max(1, size // 2)
            self.ctx.log.info("%s %s rejected (%s); size now %d", order.side, order.symbol,
                              reply.reason, self._size[order.symbol])
