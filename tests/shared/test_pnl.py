"""Average-cost positions and PnL: fills, marks, round trips, flips, and the published shape."""

from __future__ import annotations

import math
import uuid

import pytest

from ext import SharedPriceBook
from ext.segment import SegmentWatcher
from processes.shared.pnl import PnLBook, totals
from reactor import Backoff

pytestmark = pytest.mark.timeout(10)


def row(book: PnLBook, client: str = "s", symbol: str = "AAPL", prices=None) -> dict:
    return book.mark(prices)[client][symbol]


def test_buys_average_and_mark():
    book = PnLBook()
    book.on_fill("s", "AAPL", "BUY", 10, 100.0)
    book.on_fill("s", "AAPL", "BUY", 30, 104.0)
    r = row(book, prices={"AAPL": 110.0})
    assert r["position"] == 40
    assert r["avg_price"] == pytest.approx(103.0)
    assert r["realized"] == 0
    assert r["unrealized"] == pytest.approx(40 * (110.0 - 103.0))


def test_never_marked_symbol_has_zero_unrealized_and_marks_persist():
    book = PnLBook()
    book.on_fill("s", "AAPL", "BUY", 10, 100.0)
    assert row(book)["unrealized"] == 0
    book.mark({"AAPL": 101.0})
    # A later call without that symbol keeps the last mark (the OrderManager's final snapshot is
    # written after it closed the price book).
    assert row(book, prices={"MSFT": 5.0})["unrealized"] == pytest.approx(10.0)
    assert row(book, prices={"AAPL": math.nan})["unrealized"] == pytest.approx(10.0)


def test_long_round_trip_realizes():
    book = PnLBook()
    book.on_fill("s", "AAPL", "BUY", 10, 100.0)
    assert book.on_fill("s", "AAPL", "SELL", 4, 105.0) == pytest.approx(20.0)
    r = row(book, prices={"AAPL": 90.0})
    assert r["position"] == 6 and r["avg_price"] == pytest.approx(100.0)
    assert r["realized"] == pytest.approx(20.0)
    assert r["unrealized"] == pytest.approx(6 * -10.0)
    book.on_fill("s", "AAPL", "SELL", 6, 95.0)
    r = row(book, prices={"AAPL": 90.0})
    assert r == {"position": 0, "avg_price": 0.0, "realized": pytest.approx(20.0 - 30.0),
                 "unrealized": 0.0}


def test_short_round_trip_realizes_with_the_right_sign():
    book = PnLBook()
    book.on_fill("s", "TSLA", "SELL", 10, 200.0)
    r = row(book, symbol="TSLA", prices={"TSLA": 190.0})
    assert r["position"] == -10 and r["unrealized"] == pytest.approx(100.0)
    book.on_fill("s", "TSLA", "BUY", 10, 180.0)
    r = row(book, symbol="TSLA")
    assert r["position"] == 0 and r["realized"] == pytest.approx(200.0)


def test_flip_long_to_short_opens_the_rest_at_the_fill_price():
    """The Strategy's short -> long move is one order of 2 x quantity: it must close the old side
    (realizing) and open the other at the fill price."""
    book = PnLBook()
    book.on_fill("s", "GOOG", "BUY", 10, 50.0)
    realized = book.on_fill("s", "GOOG", "SELL", 20, 55.0)
    assert realized == pytest.approx(50.0)
    r = row(book, symbol="GOOG", prices={"GOOG": 60.0})
    assert r["position"] == -10
    assert r["avg_price"] == pytest.approx(55.0)
    assert r["unrealized"] == pytest.approx(-50.0)
    book.on_fill("s", "GOOG", "BUY", 20, 52.0)   # and back: short -> long
    r = row(book, symbol="GOOG", prices={"GOOG": 52.0})
    assert r["position"] == 10 and r["avg_price"] == pytest.approx(52.0)
    assert r["realized"] == pytest.approx(50.0 + 30.0)


def test_clients_are_separate_and_totals_add_up():
    book = PnLBook()
    book.on_fill("a", "AAPL", "BUY", 10, 100.0)
    book.on_fill("b", "AAPL", "SELL", 10, 100.0)
    book.on_fill("b", "MSFT", "BUY", 5, 10.0)
    book.on_fill("b", "MSFT", "SELL", 5, 12.0)
    out = book.stats({"AAPL": 101.0})
    assert out["pnl"]["a"]["AAPL"]["unrealized"] == pytest.approx(10.0)
    assert out["pnl"]["b"]["AAPL"]["unrealized"] == pytest.approx(-10.0)
    t = out["pnl_totals"]
    assert t["clients"]["a"] == {"realized": 0.0, "unrealized": 10.0, "total": 10.0}
    assert t["clients"]["b"]["total"] == pytest.approx(0.0)
    assert t["realized"] == pytest.approx(10.0)
    assert t["total"] == pytest.approx(10.0)
    assert totals({}) == {"realized": 0.0, "unrealized": 0.0, "total": 0.0, "clients": {}}


@pytest.mark.parametrize("args", [("s", "AAPL", "HOLD", 1, 1.0), ("s", "AAPL", "BUY", 0, 1.0),
                                  ("s", "AAPL", "BUY", 1.5, 1.0), ("s", "AAPL", "BUY", 1, 0.0),
                                  ("s", "AAPL", "BUY", 1, math.inf), ("s", "AAPL", "BUY", True, 1)])
def test_bad_fills_are_refused(args):
    book = PnLBook()
    with pytest.raises(ValueError):
        book.on_fill(*args)
    assert book.positions == {}


def test_marks_from_a_shared_memory_book():
    # The OrderManager's marks: a SegmentWatcher's prices().
    name = f"tstest_{uuid.uuid4().hex[:12]}"
    with SharedPriceBook(["AAPL", "MSFT"], name=name, create=True) as writer:
        writer.update("AAPL", 172.5)
        marks = SegmentWatcher(name, Backoff())
        try:
            assert marks.prices() == {"AAPL": 172.5}   # MSFT never written: left out
        finally:
            marks.close()
