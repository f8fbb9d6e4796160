"""Replay a recorded market file (processes.shared.market_file) through the Gateway instead of
the random walk and sentiment.

Prices go to the price subscribers, news to the news subscribers, both paced by the file's
timestamps on one clock (processes.gateway.pacing): row i is due when
(timestamp_i - timestamp_0) / csv_speed seconds have passed since the clock started (csv_speed 2
= twice the recorded pace); rows due together go out in one batch, at most one timer per
millisecond. csv_speed 0 sends as fast as the clients drain (each stream in file order, with no
timing between them). A file without news rows leaves the news feed to the random sentiment.

Start rule: the clock starts when the first price subscriber (the OrderBook) connects; when the
file has news, only once there is also a news subscriber (a Strategy connects to news after it
has attached to the book), so a replay that does not loop is seen whole by the first Strategy.
Until a symbol's first row is sent, a connecting subscriber's snapshot leaves it out: a replay
does not show a price (or a sentiment) before its time.

Replay never skips rows to catch up: a feed that falls behind sends MAX_BATCH rows per loop turn
until it is on time. At the end of the file the replay starts again from the first row
(csv_loop = true; per-symbol sequence numbers keep increasing, so the OrderBook sees no reset) or
stops sending (csv_loop = false; the connections stay open).

Frames are the Gateway's usual `SYM,PRICE,SEQ,SENT_NS*` (or `SYM,PRICE*` with plain) and
`SYM,SENTIMENT*`: SEQ counts this symbol's ticks sent, SENT_NS is the send time, so gap
detection and latency work unchanged.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

from processes.gateway.pacing import ENDLESS
from processes.shared.market_file import CsvReport, Event, ReplayError, load_events
from processes.shared.protocol import format_news


def loop_period(times: list[float]) -> float:
    """Recorded seconds between a looping file's passes: its span plus one mean row interval,
    so the next pass does not start on top of the last row."""
    n = len(times)
    span = times[-1] - times[0] if n else 0.0
    return span + (span / (n - 1) if n > 1 and span > 0 else 1.0)


class FileSchedule:
    """pacing.Schedule of a replayed stream: row k is due at its recorded time / speed, passes
    of a looping file one `period` apart. Never skips."""

    __slots__ = ("times", "period", "speed", "total", "skips", "_n")

    def __init__(self, times: list[float], period: float, speed: float, loop: bool) -> None:
        self.times = times              # recorded seconds since the file's first row, any stream
        self.period = period
        self.speed = speed
        self._n = len(times)
        self.total = ENDLESS if loop else self._n
        self.skips = False

    def due(self, elapsed: float) -> int:
        if not self._n:
            return 0
        # The nudge absorbs rounding: at when(k), row k must count as due.
        target_time = elapsed * self.speed + 1e-9
        k = int(target_time // self.period)
        target = k * self._n + bisect.bisect_right(self.times, target_time - k * self.period)
        return min(target, self.total)

    def when(self, k: int) -> float:
        passes, i = divmod(k, self._n)
        return (passes * self.period + self.times[i]) / self.speed


class _Track:
    """One stream of a recorded file (its prices, or its news): row times on the file's clock,
    what has been sent, and where it is in the file."""

    __slots__ = ("symbols", "loop", "times", "period", "pos", "_sym", "_n", "_i")

    def __init__(self, times: list[float], syms: list[int], symbols: list[str], loop: bool,
                 period: float) -> None:
        self.symbols = [s.encode() for s in symbols]
        self.loop = loop
        self.times = times
        self.period = period
        self.pos = 0                      # rows sent so far, over all loops
        self._sym = syms
        self._n = len(times)
        self._i = 0                       # row index of self.pos within the file

    @property
    def rows(self) -> int:
        return self._n

    @property
    def remaining(self) -> int:
        """Rows left to send (ENDLESS when looping)."""
        return ENDLESS if self.loop else self._n - self.pos

    @property
    def loops(self) -> int:
        """Completed passes over the file."""
        return self.pos // self._n if self._n else 0

    def schedule(self, speed: float) -> FileSchedule:
        return FileSchedule(self.times, self.period, speed, self.loop)


def _file_clock(events: list[Event]) -> tuple[float, float]:
    """(t0, loop period) of a file, shared by its streams so they stay in step."""
    times = [e.ts for e in events]
    return times[0], loop_period(times)


class CsvPrices(_Track):
    """A recorded tick list with the TickEncoder interface (batch, snapshot).

    Everything per row is prepared here once (symbol index, `SYM,PRICE,` prefix, plain frame),
    so batch() only adds the sequence number and send time: it is the Gateway's hot path.
    """

    __slots__ = ("seqs", "_prefix", "_plain", "_last")

    def __init__(self, rows: list[tuple[float, str, float]], symbols: list[str],
                 loop: bool = True, t0: float | None = None,
                 period: float | None = None) -> None:
        if not rows:
            raise ReplayError("gateway.csv: no rows to replay")
        index = {s: i for i, s in enumerate(symbols)}
        start = rows[0][0] if t0 is None else t0
        times = [ts - start for ts, _, _ in rows]
        super().__init__(times, [index[sym] for _, sym, _ in rows], symbols, loop,
                         loop_period(times) if period is None else period)
        self.seqs = [0] * len(symbols)
        self._prefix = [b"%s,%s," % (sym.encode(), repr(p).encode()) for _, sym, p in rows]
        self._plain = [b"%s,%s*" % (sym.encode(), repr(p).encode()) for _, sym, p in rows]
        # Per symbol, the row whose price is current; None until its first row is sent.
        self._last: list[int | None] = [None] * len(symbols)

    @classmethod
    def from_file(cls, path: str | Path, symbols: list[str],
                  loop: bool = True) -> tuple[CsvPrices, CsvReport]:
        market = CsvMarket.from_file(path, symbols, loop)
        return market.prices, market.report

    def batch(self, n: int, sent_ns: int, plain: bool) -> bytes:
        """The next n rows (fewer at the end of a non-looping file) as one buffer of frames."""
        if n > self.remaining:
            n = self.remaining
        syms, seqs, last, count = self._sym, self.seqs, self._last, self._n
        i = self._i
        out = []
        append = out.append
        if plain:
            frames = self._plain
            for _ in range(n):
                last[syms[i]] = i
                append(frames[i])
                i += 1
                if i == count:
                    i = 0
        else:
            prefix = self._prefix
            tail = b",%d*" % sent_ns
            for _ in range(n):
                s = syms[i]
                seq = seqs[s] + 1
                seqs[s] = seq
                last[s] = i
                append(b"%s%d%s" % (prefix[i], seq, tail))
                i += 1
                if i == count:
                    i = 0
        self._i = i
        self.pos += n
        return b"".join(out)

    def snapshot(self, sent_ns: int, plain: bool) -> bytes:
        """The current price of every symbol sent so far."""
        out = []
        for s, k in enumerate(self._last):
            if k is None:
                continue
            if plain:
                out.append(self._plain[k])
            else:
                out.append(b"%s%d,%d*" % (self._prefix[k], self.seqs[s], sent_ns))
        return b"".join(out)

    def stats(self) -> dict[str, Any]:
        return {"replay_rows": self._n, "replay_sent": self.pos, "replay_loops": self.loops,
                "replay_done": self.remaining <= 0}


class CsvNews(_Track):
    """A file's news rows with the Sentiment interface (batch, snapshot)."""

    __slots__ = ("_frames", "_last")

    def __init__(self, rows: list[tuple[float, str, int]], symbols: list[str], loop: bool,
                 t0: float, period: float) -> None:
        index = {s: i for i, s in enumerate(symbols)}
        super().__init__([ts - t0 for ts, _, _ in rows], [index[sym] for _, sym, _ in rows],
                         symbols, loop, period)
        self._frames = [format_news(sym.encode(), v) for _, sym, v in rows]
        self._last: list[int | None] = [None] * len(symbols)   # as CsvPrices._last

    def batch(self, n: int) -> bytes:
        """The next n news rows as one buffer of frames."""
        if n > self.remaining:
            n = self.remaining
        syms, last, count, frames = self._sym, self._last, self._n, self._frames
        i = self._i
        out = []
        for _ in range(n):
            last[syms[i]] = i
            out.append(frames[i])
            i += 1
            if i == count:
                i = 0
        self._i = i
        self.pos += n
        return b"".join(out)

    def snapshot(self) -> bytes:
        """The current sentiment of every symbol whose news has been sent so far."""
        return b"".join(self._frames[k] for k in self._last if k is not None)

    def stats(self) -> dict[str, Any]:
        return {"replay_news_rows": self._n, "replay_news_sent": self.pos,
                "replay_news_done": self.remaining <= 0}


class CsvMarket:
    """A loaded file as the Gateway's two streams on one clock: prices, and news if it has any."""

    __slots__ = ("prices", "news", "report")

    def __init__(self, events: list[Event], symbols: list[str], loop: bool, report: CsvReport
                 ) -> None:
        t0, period = _file_clock(events)
        self.prices = CsvPrices([(e.ts, e.symbol, e.price) for e in events
                                 if e.price is not None], symbols, loop, t0, period)
        news = [(e.ts, e.symbol, e.sentiment) for e in events if e.price is None]
        self.news = CsvNews(news, symbols, loop, t0, period) if news else None
        self.report = report

    @classmethod
    def from_file(cls, path: str | Path, symbols: list[str], loop: bool = True) -> CsvMarket:
        events, report = load_events(path, symbols)
        return cls(events, symbols, loop, report)


