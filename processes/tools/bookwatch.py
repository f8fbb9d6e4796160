"""A read-only attachment to the OrderBook's shared-memory price book, for processes that only
look at prices (the dashboard; the OrderManager marking PnL).

Reads are seqlock reads (read_slot): they never block the writer and take no reader entry, so the
OrderBook does not know we are there. Nothing here belongs on a hot path: call it from a timer.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

from ext import LayoutError, SharedPriceBook
from reactor import Backoff


class BookWatcher:
    """Read-only attachment to the OrderBook's segment that survives the OrderBook.

    Missing segment: retried with exponential backoff (0.1 s .. 2 s), never in a tight loop.
    Replaced segment (an OrderBook restart creates a new file under the same name): noticed by
    the inode changing, and re-attached.
    """

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.book: SharedPriceBook | None = None
        self.status = "not attached"
        self._inode: int | None = None
        self._next_try = 0.0
        self._backoff = Backoff(initial=0.1, maximum=2.0)

    @property
    def path(self) -> str:
        return f"/dev/shm/{self.name.lstrip('/')}"

    def _inode_now(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except OSError:
            return None

    def _attach(self) -> bool:
        if self.clock() < self._next_try:
            return False
        inode = self._inode_now()
        try:
            self.book = SharedPriceBook(name=self.name, create=False)
        except (FileNotFoundError, ValueError, LayoutError, OSError) as exc:
            # Missing, or caught mid-creation (header not written yet): try again later.
            delay = self._backoff.next()
            self._next_try = self.clock() + delay
            self.status = f"waiting for {self.name} ({type(exc).__name__}; retry in {delay:.1f}s)"
            return False
        self._inode = inode
        self._backoff.reset()
        self.status = f"attached to {self.name}"
        return True

    def detach(self) -> None:
        if self.book is not None:
            self.book.close()
            self.book = None

    def quotes(self) -> dict[str, tuple[float, int, int]] | None:
        """{symbol: (price, tick_seq, write_ns)} from the book (price NaN if never written), or
        None while not attached."""
        if self.book is not None and self._inode_now() != self._inode:
            self.detach()      # unlinked (OrderBook stopped) or replaced (restarted)
            self.status = f"{self.name} went away; re-attaching"
        if self.book is None and not self._attach():
            return None
        book = self.book
        assert book is not None
        try:
            out = {}
            for i, sym in enumerate(book.symbols):
                price, _sent_ns, tick_seq, write_ns = book.read_slot(i)
                out[sym] = (price, tick_seq, write_ns)
            return out
        except Exception as exc:   # e.g. a writer that died mid-write: the read times out
            self.detach()
            self.status = f"read failed ({type(exc).__name__}: {exc}); re-attaching"
            return None

    def close(self) -> None:
        self.detach()

    def prices(self) -> dict[str, float]:
        """{symbol: latest price} of the symbols written so far; {} while not attached."""
        quotes = self.quotes() or {}
        return {sym: q[0] for sym, q in quotes.items() if math.isfinite(q[0]) and q[0] > 0}
