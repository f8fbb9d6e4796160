"""Replay a recorded price file through the Gateway instead of the random walk.

File format (`gateway.csv`, `--csv PATH`): one tick per line, `timestamp,symbol,price`.

- `timestamp`: seconds as a float (epoch or relative, e.g. `1715693400.125` or `12.5`), or
  ISO-8601 (`2024-05-14T13:30:00.125Z`, `2024-05-14 09:30:00.125-04:00`; without a zone it is
  taken as UTC). Only differences between rows matter. Rows must not go back in time.
- `symbol`: one of market.symbols. Rows of other symbols are skipped and counted per symbol
  (the OrderBook, Strategy and OrderManager all use market.symbols, so the Gateway alone cannot
  add symbols: set market.symbols to replay others).
- `price`: finite, > 0 and <= 1e9.
- An optional header line names the columns (`timestamp,symbol,price`, any order, extra columns
  ignored); without one the first three columns are used in that order. Blank lines and lines
  starting with `#` are ignored.

A row that breaks these rules is skipped and reported with its line number (the first
LOGGED_BAD_ROWS one by one, the rest counted). A file with no usable row is an error.

Pacing: row i is sent when (timestamp_i - timestamp_0) / csv_speed seconds have passed since the
first price subscriber connected (csv_speed 2 = twice the recorded pace); rows due together go out
in one batch, at most one timer per millisecond. csv_speed 0 sends as fast as the clients drain.
Replay never skips rows to catch up: a feed that falls behind sends MAX_BATCH rows per loop turn
until it is on time. At the end of the file the replay starts again from the first row
(csv_loop = true; per-symbol sequence numbers keep increasing, so the OrderBook sees no reset) or
stops sending (csv_loop = false; the price connections stay open).

Frames are the Gateway's usual `SYM,PRICE,SEQ,SENT_NS*` (or `SYM,PRICE*` with plain): SEQ counts
this symbol's ticks sent, SENT_NS is the send time, so gap detection and latency work unchanged.
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from processes.shared.protocol import MAX_PRICE
from reactor import Connection, Reactor

LOGGED_BAD_ROWS = 10      # bad rows logged one by one; the rest only counted
MAX_BATCH = 4096          # rows formatted into one send
FAST_BATCH = 256          # rows per loop turn when unpaced (csv_speed 0)
MIN_PERIOD = 0.001        # at most one pacing timer per millisecond; closer rows share a batch
COLUMNS = ("timestamp", "symbol", "price")


class ReplayError(ValueError):
    """The price file cannot be replayed at all; the message names gateway.csv."""


@dataclass
class CsvReport:
    """What loading a price file found: kept for the log and for the tests."""

    path: str
    rows: int = 0                                   # usable rows
    bad: int = 0                                    # rows skipped as malformed
    errors: list[tuple[int, str]] = field(default_factory=list)   # first bad rows (line, why)
    unknown: Counter = field(default_factory=Counter)   # symbol -> rows skipped
    missing: list[str] = field(default_factory=list)    # configured symbols never in the file
    span_s: float = 0.0                             # last - first timestamp

    def lines(self) -> list[str]:
        """The report as log lines: summary, each logged bad row, and what was left out."""
        out = [f"replaying {self.path}: {self.rows} rows over {self.span_s:.1f}s of recorded time"
               f", {self.bad} bad rows skipped"]
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


def parse_rows(lines: Iterable[str], symbols: list[str], path: str = "<csv>",
               max_errors: int = LOGGED_BAD_ROWS) -> tuple[list[tuple[float, str, float]],
                                                           CsvReport]:
    """[(timestamp, symbol, price)] of the usable rows, and the report of what was skipped."""
    report = CsvReport(path)
    known = set(symbols)
    rows: list[tuple[float, str, float]] = []
    cols: tuple[int, int, int] | None = None
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
                                      f"{','.join(COLUMNS)}, got {','.join(names)}")
                cols = (names.index("timestamp"), names.index("symbol"), names.index("price"))
                width = len(names)
                continue
            cols = (0, 1, 2)
        if len(fields) != width:
            bad(line, f"expected {width} fields, got {len(fields)}")
            continue
        t_text, sym, p_text = (fields[i].strip() for i in cols)
        try:
            ts = parse_timestamp(t_text)
        except ValueError as exc:
            bad(line, str(exc))
            continue
        if not sym:
            bad(line, "empty symbol")
            continue
        try:
            price = float(p_text)
        except ValueError:
            bad(line, f"bad price {p_text[:40]!r}")
            continue
        if not 0.0 < price <= MAX_PRICE:   # also rejects nan and inf
            bad(line, f"price must be finite, > 0 and <= {MAX_PRICE:g}, got {p_text[:40]!r}")
            continue
        if sym not in known:
            report.unknown[sym] += 1
            continue
        if ts < prev:
            bad(line, f"timestamp goes back in time ({t_text[:40]} is before the row above)")
            continue
        prev = ts
        rows.append((ts, sym, price))
    report.rows = len(rows)
    if rows:
        report.span_s = rows[-1][0] - rows[0][0]
    seen = {sym for _, sym, _ in rows}
    report.missing = [s for s in symbols if s not in seen]
    return rows, report


def load(path: str | Path, symbols: list[str]) -> tuple[list[tuple[float, str, float]], CsvReport]:
    """parse_rows() of a file; ReplayError if it is missing or has no usable row."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows, report = parse_rows(fh, symbols, str(path))
    except OSError as exc:
        raise ReplayError(f"gateway.csv: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ReplayError(f"gateway.csv: {path} is not UTF-8 text ({exc.reason})") from None
    if not rows:
        why = [f"{report.bad} bad rows"]
        why.extend(f"line {line}: {reason}" for line, reason in report.errors[:3])
        if report.unknown:
            why.append(f"symbols not in market.symbols: {', '.join(sorted(report.unknown))}")
        raise ReplayError(f"gateway.csv: {path} has no usable rows ({'; '.join(why)})")
    return rows, report


class CsvPrices:
    """A recorded tick list with the PriceWalk interface (batch, snapshot), plus its schedule.

    Everything per row is prepared here once (symbol index, `SYM,PRICE,` prefix, plain frame),
    so batch() only adds the sequence number and send time: it is the Gateway's hot path.
    """

    __slots__ = ("symbols", "seqs", "pos", "loop", "times", "period", "_sym", "_prefix",
                 "_plain", "_last", "_n", "_i")

    def __init__(self, rows: list[tuple[float, str, float]], symbols: list[str],
                 loop: bool = True) -> None:
        if not rows:
            raise ReplayError("gateway.csv: no rows to replay")
        index = {s: i for i, s in enumerate(symbols)}
        self.symbols = [s.encode() for s in symbols]
        self.seqs = [0] * len(symbols)
        self.pos = 0                      # rows sent so far, over all loops
        self.loop = loop
        t0 = rows[0][0]
        self.times = [ts - t0 for ts, _, _ in rows]   # recorded seconds since the first row
        n = self._n = len(rows)
        span = self.times[-1]
        # The next loop starts one mean row interval after the last row, not on top of it.
        self.period = span + (span / (n - 1) if n > 1 and span > 0 else 1.0)
        self._sym = [index[sym] for _, sym, _ in rows]
        self._prefix = [b"%s,%s," % (sym.encode(), repr(p).encode()) for _, sym, p in rows]
        self._plain = [b"%s,%s*" % (sym.encode(), repr(p).encode()) for _, sym, p in rows]
        # Per symbol, the row whose price is current: its first row until it has been sent, so
        # a subscriber connecting before the replay reaches a symbol still gets a full book.
        self._last: list[int | None] = [None] * len(symbols)
        for k in range(n - 1, -1, -1):
            self._last[self._sym[k]] = k
        self._i = 0                       # row index of self.pos within the file

    @classmethod
    def from_file(cls, path: str | Path, symbols: list[str],
                  loop: bool = True) -> tuple[CsvPrices, CsvReport]:
        rows, report = load(path, symbols)
        return cls(rows, symbols, loop), report

    @property
    def rows(self) -> int:
        return self._n

    @property
    def remaining(self) -> int:
        """Rows left to send (sys.maxsize when looping)."""
        return sys.maxsize if self.loop else self._n - self.pos

    @property
    def loops(self) -> int:
        """Completed passes over the file."""
        return self.pos // self._n

    def file_time(self, pos: int) -> float:
        """Recorded seconds (since the first row of the first pass) of the pos-th row sent."""
        k, i = divmod(pos, self._n)
        return k * self.period + self.times[i]

    def due(self, elapsed: float, speed: float) -> int:
        """How many rows are due after `elapsed` wall seconds at `speed` x the recorded pace."""
        target_time = elapsed * speed
        k = int(target_time // self.period)
        target = k * self._n + bisect.bisect_right(self.times, target_time - k * self.period)
        if not self.loop:
            target = min(target, self._n)
        return max(0, target - self.pos)

    def next_due(self, speed: float) -> float | None:
        """Wall seconds since the start at which the next row is due; None once finished."""
        if self.remaining <= 0:
            return None
        return self.file_time(self.pos) / speed

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
        """Every symbol's current price (symbols the file never mentions are left out)."""
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


class ReplayFeed:
    """Drives a CsvPrices on the Gateway's reactor with the PacedFeed interface (start, wake).

    The clock starts when the first price subscriber connects (wake()), so a replay that does not
    loop is seen from its first row.
    """

    def __init__(self, reactor: Reactor, source: CsvPrices, speed: float,
                 emit: Callable[[int], None], clients: list[Connection], room: int,
                 on_done: Callable[[], None] | None = None) -> None:
        self.reactor = reactor
        self.source = source
        self.speed = speed
        self.emit = emit
        self.clients = clients
        self.room = room
        self.on_done = on_done
        self._t0: float | None = None
        self._scheduled = False

    def start(self) -> None:
        if self.clients:
            self.wake()

    def wake(self) -> None:
        """A client arrived: start the clock (paced) or the pump (unpaced) if not running."""
        if self._scheduled or self.source.remaining <= 0:
            return
        if self.speed > 0 and self._t0 is None:
            self._t0 = self.reactor.time()
        self._scheduled = True
        self.reactor.call_soon(self._paced if self.speed > 0 else self._pump)

    def _finish(self) -> None:
        if self.on_done is not None:
            self.on_done()

    def _paced(self) -> None:
        source = self.source
        elapsed = self.reactor.time() - self._t0
        n = source.due(elapsed, self.speed)
        if n > MAX_BATCH:
            n = MAX_BATCH
        if n:
            self.emit(n)
        nxt = source.next_due(self.speed)
        if nxt is None:
            self._scheduled = False
            self._finish()
            return
        delay = nxt - (self.reactor.time() - self._t0)
        if delay <= 0:
            self.reactor.call_soon(self._paced)      # behind: next batch on the next turn
        else:
            self.reactor.call_later(max(delay, MIN_PERIOD), self._paced)

    def _pump(self) -> None:
        self._scheduled = False
        if not self.clients:
            return  # nobody listening: idle until wake()
        if any(c.pending < self.room for c in self.clients):
            n = min(FAST_BATCH, self.source.remaining)
            if n > 0:
                self.emit(n)
            if self.source.remaining <= 0:
                self._finish()
                return
            self.wake()
        else:
            self._scheduled = True
            self.reactor.call_later(MIN_PERIOD, self._pump)


def log_report(log: logging.Logger, report: CsvReport) -> None:
    """Start-up lines: summary at INFO, skipped rows and symbols at WARNING."""
    first, *rest = report.lines()
    log.info("%s", first)
    for line in rest:
        log.warning("%s", line)
