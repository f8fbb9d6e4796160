"""Trading rules, free of I/O so they can be tested exactly.

Prices are held as integer micro-units: running sums of floats drift, and a drifted sum can turn
"short MA == long MA" into a spurious strict inequality, i.e. a phantom order.
"""

from __future__ import annotations

BUY = 1
SELL = -1
NEUTRAL = 0
_SCALE = 1_000_000


class MovingAverageCrossover:
    """Short vs long simple moving average over the last prices seen; O(1) per price."""

    __slots__ = ("short", "long", "_ring", "_pos", "_count", "_short_sum", "_long_sum")

    def __init__(self, short: int, long: int) -> None:
        if not 1 <= short < long:
            raise ValueError("need 1 <= short < long")
        self.short = short
        self.long = long
        self._ring = [0] * long
        self._pos = 0
        self._count = 0
        self._short_sum = 0
        self._long_sum = 0

    def update(self, price: float) -> int:
        """Add a price; BUY if short MA > long MA, SELL if <, NEUTRAL if equal or warming up."""
        p = round(price * _SCALE)
        ring, pos, long = self._ring, self._pos, self.long
        self._long_sum += p - ring[pos]          # ring[pos] is 0 until the ring has filled
        short_out = pos - self.short
        if self._count >= self.short:
            self._short_sum += p - ring[short_out]  # negative index wraps: Python does the modulo
        else:
            self._short_sum += p
        ring[pos] = p
        self._pos = pos + 1 if pos + 1 < long else 0
        if self._count < long:
            self._count += 1
            if self._count < long:
                return NEUTRAL
        # short_sum/short vs long_sum/long, cross-multiplied to stay in exact integers
        lhs = self._short_sum * long
        rhs = self._long_sum * self.short
        return BUY if lhs > rhs else SELL if lhs < rhs else NEUTRAL

    @property
    def ready(self) -> bool:
        return self._count >= self.long


def sentiment_signal(sentiment: int | None, bullish: int, bearish: int) -> int:
    """BUY strictly above bullish, SELL strictly below bearish; no news yet is neutral."""
    if sentiment is None:
        return NEUTRAL
    if sentiment > bullish:
        return BUY
    if sentiment < bearish:
        return SELL
    return NEUTRAL


def combine(trend: int, news: int) -> int:
    """Trade only when both rules agree."""
    return trend if trend == news else NEUTRAL


def order_for(signal: int, position: int, quantity: int) -> tuple[int, int]:
    """(side, qty) that moves the net `position` (signed quantity) to the signal's target, or
    (NEUTRAL, 0) when the position is already on the signal's side.

    The target is +quantity (long) or -quantity (short): from short, a BUY is 2*quantity.
    Holding the side we want sends nothing, which is what makes duplicates impossible.
    """
    if signal == NEUTRAL or (position > 0 and signal == BUY) or (position < 0 and signal == SELL):
        return NEUTRAL, 0
    return signal, abs(signal * quantity - position)
