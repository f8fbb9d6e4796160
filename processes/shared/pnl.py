"""Positions and profit and loss per client and symbol, from booked orders and marked prices.

Pure bookkeeping: no I/O, no clock, no logging, so the OrderManager can call it per booked order and
the tests can drive it by hand.

Method: **average cost**. A fill that opens or adds to a position moves the average price to the
quantity-weighted mean of the old position and the fill; a fill against the position realizes
(fill price - average price) x closed quantity (sign-adjusted for shorts) and leaves the average
of the rest unchanged; a fill larger than the position closes it and opens the remainder on the
other side at the fill price. Average cost rather than FIFO because the stack only ever holds one
position per client and symbol and the dashboard shows one average per position: FIFO lots would
change realized PnL only in how a partial close is attributed, at the cost of a lot queue.

Every fill is at the order's own price (the OrderManager books each order in full at its price;
there is no matching engine). Unrealized PnL is position x (mark - average price), with the mark
being the latest price passed to mark() for that symbol; a symbol never marked has unrealized 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SIDES = {"BUY": 1, "SELL": -1}


class Position:
    """One client's holding in one symbol; qty > 0 long, < 0 short."""

    __slots__ = ("qty", "avg_price", "realized", "fills")

    def __init__(self) -> None:
        self.qty = 0
        self.avg_price = 0.0
        self.realized = 0.0
        self.fills = 0

    def fill(self, signed_qty: int, price: float) -> float:
        """Apply one fill; returns the PnL it realized."""
        self.fills += 1
        qty = self.qty
        if qty == 0 or (qty > 0) == (signed_qty > 0):
            total = qty + signed_qty
            self.avg_price = (abs(qty) * self.avg_price + abs(signed_qty) * price) / abs(total)
            self.qty = total
            return 0.0
        closed = min(abs(signed_qty), abs(qty))
        realized = closed * (price - self.avg_price) * (1 if qty > 0 else -1)
        self.realized += realized
        total = qty + signed_qty
        self.qty = total
        if total == 0:
            self.avg_price = 0.0
        elif (total > 0) != (qty > 0):   # flipped: the remainder opened at this fill's price
            self.avg_price = price
        return realized

    def unrealized(self, mark: float | None) -> float:
        if mark is None or self.qty == 0:
            return 0.0
        return self.qty * (mark - self.avg_price)


class PnLBook:
    """Positions of every client (the order's `client` field) in every symbol it traded.

    The OrderManager calls on_fill() once per booked order and stats(prices) when it publishes.
    """

    def __init__(self) -> None:
        self.positions: dict[str, dict[str, Position]] = {}
        self.marks: dict[str, float] = {}   # last price seen per symbol, kept across calls

    def on_fill(self, client: str, symbol: str, side: str, qty: int, price: float) -> float:
        """Book one fill at `price`; returns the PnL it realized. Raises ValueError on bad input
        (the OrderManager validates orders first, so that means a bug, not a feed problem)."""
        sign = SIDES.get(side)
        if sign is None:
            raise ValueError(f"side must be BUY or SELL, got {side!r}")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise ValueError(f"qty must be an int > 0, got {qty!r}")
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price must be finite and > 0, got {price!r}")
        by_symbol = self.positions.get(client)
        if by_symbol is None:
            by_symbol = self.positions[client] = {}
        pos = by_symbol.get(symbol)
        if pos is None:
            pos = by_symbol[symbol] = Position()
        return pos.fill(sign * qty, price)

    def update_marks(self, prices: Mapping[str, float]) -> None:
        """Remember the latest price per symbol (non-finite or non-positive ones are ignored,
        e.g. a shared-memory slot that was never written reads NaN)."""
        for sym, price in prices.items():
            if isinstance(price, (int, float)) and math.isfinite(price) and price > 0:
                self.marks[sym] = float(price)

    def mark(self, prices: Mapping[str, float] | None = None
             ) -> dict[str, dict[str, dict[str, float]]]:
        """{client: {symbol: {"position", "avg_price", "realized", "unrealized"}}}, marked to
        `prices` (and, for symbols missing there, to the last price seen before)."""
        if prices:
            self.update_marks(prices)
        marks = self.marks
        return {client: {sym: {"position": pos.qty, "avg_price": round(pos.avg_price, 6),
                               "realized": round(pos.realized, 6),
                               "unrealized": round(pos.unrealized(marks.get(sym)), 6)}
                         for sym, pos in sorted(by_symbol.items())}
                for client, by_symbol in sorted(self.positions.items())}

    def stats(self, prices: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The keys the OrderManager merges into its stats(): `pnl` (as mark()) and
        `pnl_totals` {"realized", "unrealized", "total", "clients": {client: same three}}."""
        marked = self.mark(prices)
        return {"pnl": marked, "pnl_totals": totals(marked)}


def totals(marked: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """Sum a mark() result per client and overall."""
    clients: dict[str, dict[str, float]] = {}
    realized = unrealized = 0.0
    for client, by_symbol in marked.items():
        r = sum(row.get("realized", 0.0) for row in by_symbol.values())
        u = sum(row.get("unrealized", 0.0) for row in by_symbol.values())
        clients[client] = {"realized": round(r, 6), "unrealized": round(u, 6),
                           "total": round(r + u, 6)}
        realized += r
        unrealized += u
    return {"realized": round(realized, 6), "unrealized": round(unrealized, 6),
            "total": round(realized + unrealized, 6), "clients": clients}
