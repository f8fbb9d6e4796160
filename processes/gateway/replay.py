"""Replay a recorded market file through the Gateway instead of the random walk and sentiment.

File format (`gateway.csv`, `--csv PATH`): one event per line, `timestamp,symbol,price,sentiment`.

- `timestamp`: seconds as a float (epoch or relative, e.g. `1715693400.125` or `12.5`), or
  ISO-8601 (`2024-05-14T13:30:00.125Z`, `2024-05-14 09:30:00.125-04:00`; without a zone it is
  taken as UTC). Only differences between rows matter. Rows must not go back in time.
- `symbol`: one of market.symbols. Rows of other symbols are skipped and counted per symbol
  (the OrderBook, Strategy and OrderManager all use market.symbols, so the Gateway alone cannot
  add symbols: set market.symbols to replay others).
- `price`: finite, > 0 and <= 1e9: the row is a tick.
- `sentiment`: an integer 0..100 on a row whose price is empty: the row is news for that symbol.
  A row is one or the other; one with both, or with neither, is a bad row.
- A header line names the columns (`timestamp,symbol,price` and optionally `sentiment`, any
  order, extra columns ignored); without one the first three columns are
  `timestamp,symbol,price` and the file holds prices only. Blank lines and lines starting with
  `#` are ignored.

A row that breaks these rules is skipped and reported with its line number (the first
LOGGED_BAD_ROWS one by one, the rest counted). A file without a usable price row is an error.

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
import csv
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from processes.gateway.pacing import ENDLESS
from processes.shared.protocol import MAX_PRICE, format_news

LOGGED_BAD_ROWS = 10      # bad rows logged one by one; the rest only counted
COLUMNS = ("timestamp", "symbol", "price")
NEWS_COLUMN = "sentiment"


class ReplayError(ValueError):
    """The price file cannot be replayed at all; the message names gateway.csv."""


class Event(NamedTuple):
    """One usable row: a tick (price set, sentiment None) or news (sentiment set, price None)."""

    ts: float
    symbol: str
    price: float | None
    sentiment: int | None


@dataclass
class CsvReport:
    """What loading a price file found: kept for the log and for the tests."""

    path: str
    rows: int = 0                                   # usable price rows
    news: int = 0                                   # usable news rows
    bad: int = 0                                    # rows skipped as malformed
    errors: list[tuple[int, str]] = field(default_factory=list)   # first bad rows (line, why)
    unknown: Counter = field(default_factory=Counter)   # symbol -> rows skipped
    missing: list[str] = field(default_factory=list)    # configured symbols never priced
    span_s: float = 0.0                             # last - first timestamp, over all rows

    def lines(self) -> list[str]:
        """The report as log lines: summary, each logged bad row, and what was left out."""
        news = f" and {self.news} news rows" if self.news else ""
        out = [f"replaying {self.path}: {self.rows} rows{news} over {self.span_s:.1f}s of "
               f"recorded time, {self.bad} bad rows skipped"]
        out.extend(f"{self.path}:{line}: {why}; row skipped" for line, why in self.errors)
        if self.bad > len(self.errors):
            out.append(f"{self.path}: {self.bad - len(self.errors)} more bad rows skipped "
                       "(only counted)")
        if self.unknown:
            listed = ", ".join(f"{s} ({n})" for s, n in self.unknown.most_common(10))
            out.append(f"{self.path}: rows of symbols not in market.symbols skipped: {listed}")
        if self.missing:
            out.append(f"{self.path}: no rows for {', '.join(self.missing)}: those symbols get "
                       "no price")
        return out


def parse_timestamp(text: str) -> float:
    """Seconds from a float or an ISO-8601 string (naive = UTC); ValueError if neither."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"bad timestamp {text[:40]!r} (seconds or ISO-8601)") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"bad timestamp {text[:40]!r} (not finite)")
    return value


def _parse_value(p_text: str, s_text: str) -> tuple[float | None, int | None]:
    """(price, None) for a tick, (None, sentiment) for news; ValueError saying why neither."""
    if p_text:
        if s_text:
            raise ValueError("both a price and a sentiment (a row is a tick or news)")
        try:
            price = float(p_text)
        except ValueError:
            raise ValueError(f"bad price {p_text[:40]!r}") from None
        if not 0.0 < price <= MAX_PRICE:   # also rejects nan and inf
            raise ValueError(f"price must be finite, > 0 and <= {MAX_PRICE:g}, "
                             f"got {p_text[:40]!r}")
        return price, None
    if not s_text:
        raise ValueError("empty price and no sentiment")
    try:
        sentiment = int(s_text)
    except ValueError:
        raise ValueError(f"bad sentiment {s_text[:40]!r} (an integer 0..100)") from None
    if not 0 <= sentiment <= 100:
        raise ValueError(f"sentiment must be 0..100, got {s_text[:40]!r}")
    return None, sentiment


def parse_events(lines: Iterable[str], symbols: list[str], path: str = "<csv>",
                 max_errors: int = LOGGED_BAD_ROWS) -> tuple[list[Event], CsvReport]:
    """The usable rows in file order, and the report of what was skipped."""
    report = CsvReport(path)
    known = set(symbols)
    events: list[Event] = []
    cols: tuple[int, int, int] | None = None
    news_col: int | None = None
    width = 3
    prev = -math.inf

    def bad(line: int, why: str) -> None:
        report.bad += 1
        if len(report.errors) < max_errors:
            report.errors.append((line, why))

    reader = csv.reader(lines)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad(reader.line_num, f"unreadable line ({exc})")
            continue
        line = reader.line_num
        if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
            continue
        if cols is None:
            names = [f.strip().lower() for f in fields]
            if "timestamp" in names:   # header line
                if not all(c in names for c in COLUMNS):
                    raise ReplayError(f"gateway.csv: {path}:{line}: header needs the columns "
                                      f"{','.join(COLUMNS)}[,{NEWS_COLUMN}], got "
                                      f"{','.join(names)}")
                cols = (names.index("timestamp"), names.index("symbol"), names.index("price"))
                news_col = names.index(NEWS_COLUMN) if NEWS_COLUMN in names else None
                width = len(names)
                continue
            cols = (0, 1, 2)
        if len(fields) != width:
            bad(line, f"expected {width} fields, got {len(fields)}")
            continue
        t_text, sym, p_text = (fields[i].strip() for i in cols)
        s_text = fields[news_col].strip() if news_col is not None else ""
        try:
            ts = parse_timestamp(t_text)
        except ValueError as exc:
            bad(line, str(exc))
            continue
        if not sym:
            bad(line, "empty symbol")
            continue
        try:
            price, sentiment = _parse_value(p_text, s_text)
        except ValueError as exc:
            bad(line, str(exc))
            continue
        if sym not in known:
            report.unknown[sym] += 1
            continue
        if ts < prev:
            bad(line, f"timestamp goes back in time ({t_text[:40]} is before the row above)")
            continue
        prev = ts
        events.append(Event(ts, sym, price, sentiment))
    report.news = sum(1 for e in events if e.price is None)
    report.rows = len(events) - report.news
    if events:
        report.span_s = events[-1].ts - events[0].ts
    priced = {e.symbol for e in events if e.price is not None}
    report.missing = [s for s in symbols if s not in priced]
    return events, report


def parse_rows(lines: Iterable[str], symbols: list[str], path: str = "<csv>",
               max_errors: int = LOGGED_BAD_ROWS) -> tuple[list[tuple[float, str, float]],
                                                           CsvReport]:
    """[(timestamp, symbol, price)] of the usable price rows, and the report."""
    events, report = parse_events(lines, symbols, path, max_errors)
    return [(e.ts, e.symbol, e.price) for e in events if e.price is not None], report


def load_events(path: str | Path, symbols: list[str]) -> tuple[list[Event], CsvReport]:
    """parse_events() of a file; ReplayError if it is missing or has no usable price row."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            events, report = parse_events(fh, symbols, str(path))
    except OSError as exc:
        raise ReplayError(f"gateway.csv: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ReplayError(f"gateway.csv: {path} is not UTF-8 text ({exc.reason})") from None
    if not report.rows:
        why = [f"{report.bad} bad rows"]
        if report.news:
            why.append(f"{report.news} news rows but no prices")
        why.extend(f"line {line}: {reason}" for line, reason in report.errors[:3])
        if report.unknown:
            why.append(f"symbols not in market.symbols: {', '.join(sorted(report.unknown))}")
        raise ReplayError(f"gateway.csv: {path} has no usable rows ({'; '.join(why)})")
    return events, report


def load(path: str | Path, symbols: list[str]) -> tuple[list[tuple[float, str, float]], CsvReport]:
    """load_events() with the price rows only, as (timestamp, symbol, price)."""
    events, report = load_events(path, symbols)
    return [(e.ts, e.symbol, e.price) for e in events if e.price is not None], report


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
        target_time = elapsed * self.speed
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


def log_report(log: logging.Logger, report: CsvReport) -> None:
    """Start-up lines: summary at INFO, skipped rows and symbols at WARNING."""
    first, *rest = report.lines()
    log.info("%s", first)
    for line in rest:
        log.warning("%s", line)
