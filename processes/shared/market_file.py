"""The recorded-market file: one event per line, ticks and news, read by the Gateway's replay
(processes.gateway.replay) and by the backtester (processes.strategy.backtest) alike.

Format (`gateway.csv`, `--csv PATH`, the backtester's `--csv`): one event per line,
`timestamp,symbol,price,sentiment`.

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
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from processes.shared.errors import OperatorError
from processes.shared.protocol import MAX_PRICE

LOGGED_BAD_ROWS = 10      # bad rows logged one by one; the rest only counted
COLUMNS = ("timestamp", "symbol", "price")
NEWS_COLUMN = "sentiment"


class ReplayError(OperatorError, ValueError):
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


def log_report(log: logging.Logger, report: CsvReport) -> None:
    """Start-up lines: summary at INFO, skipped rows and symbols at WARNING."""
    first, *rest = report.lines()
    log.info("%s", first)
    for line in rest:
        log.warning("%s", line)
