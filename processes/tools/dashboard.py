"""The live dashboard's picture: stats snapshots + shared-memory prices -> a rich renderable.

Pure: no file, clock, terminal or process access (the caller passes the time and a pid check), so
the tests render synthetic snapshots without a terminal, and the monitor
(processes.tools.monitor) and main.py --dashboard draw the same thing. Every strategy process
("strategy", "strategy.NAME") gets its own positions column and its own row of order counters.

Inputs:
- snaps: {process: snapshot} as processes.shared.telemetry.Publisher.snapshot() writes them;
- prices: {symbol: Quote} read from the shared-memory book, or None when not attached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from processes.shared import pnl as pnl_mod
from processes.shared import telemetry
from processes.supervisor import summary

STALE_INTERVALS = 3.0     # a snapshot older than this many stats intervals marks its process stale
PROCESSES = ("gateway", "orderbook", "strategy", "order_manager")
# (process, counter, label) of the problems row; shown even when zero.
PROBLEMS = (
    ("orderbook", "gaps", "gaps"), ("orderbook", "seq_resets", "seq resets"),
    ("orderbook", "reconnects", "book reconnects"), ("strategy", "reconnects", "strat reconnects"),
    ("orderbook", "malformed", "malformed"), ("orderbook", "unknown", "unknown sym"),
    ("gateway", "dropped_batches", "dropped batches"), ("strategy", "unsent", "unsent"),
    ("gateway", "conflated", "conflated ticks"), ("gateway", "bad_clients", "feed clients shut"),
    ("strategy", "stale_symbols", "stale symbols"), ("strategy", "stale_skips", "stale skips"),
    ("strategy", "bad_news", "bad news frames"), ("strategy", "bad_replies", "bad replies"),
    ("strategy", "bad_prices", "bad prices"), ("strategy", "strategy_errors", "strategy errors"),
    ("order_manager", "duplicates", "resent dups"),
    ("order_manager", "bad_clients", "OM clients shut"),
    ("order_manager", "kill_switch", "kill switch"),
)
STRATEGY_SHOWN = (("orders", "orders"), ("acks", "acks"), ("rejects", "rejects"),
                  ("refused", "refused"), ("backoffs", "backoffs"),
                  ("strategy_errors", "errors"), ("held", "held"))
LATENCY_SHOWN = ("tick_to_shm", "tick_to_decision", "tick_to_order", "tick_to_ack",
                 "order_to_ack")


@dataclass(frozen=True, slots=True)
class Quote:
    """One shared-memory slot: price (NaN if never written), per-symbol tick seq, write time."""

    price: float
    tick_seq: int = 0
    write_ns: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    state: str          # ok | stale | dead | stopped | missing
    age_s: float | None


HEALTH_STYLE = {"ok": "bold green", "stale": "bold yellow", "dead": "bold red",
                "stopped": "dim", "missing": "dim red"}


def health(snap: Mapping[str, Any] | None, now: float, stats_interval: float,
           alive: Callable[[int], bool] | None = None) -> Health:
    """ok, or why not: no snapshot (missing), its pid is gone (dead), it wrote its final snapshot
    (stopped), or it has not published for STALE_INTERVALS intervals (stale: hung or starved)."""
    if snap is None:
        return Health("missing", None)
    age = max(0.0, now - float(snap.get("time", 0.0)))
    pid = snap.get("pid")
    if snap.get("final"):
        return Health("stopped", age)
    if alive is not None and isinstance(pid, int) and not alive(pid):
        return Health("dead", age)
    if age > STALE_INTERVALS * stats_interval:
        return Health("stale", age)
    return Health("ok", age)


# --- formatting helpers ------------------------------------------------------------------------

def _num(value: Any, fmt: str = ",.0f", missing: str = "—") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return missing
    return format(value, fmt)


def _rate(value: Any) -> str:
    """A per-second rate: one decimal below 10, so an order every 2 s shows 0.5, not 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < abs(value) < 10:
        return _num(value, ",.1f")
    return _num(value)


# A percentile of fewer samples is one of them, not a distribution: p50 = p99 = that sample.
MIN_PERCENTILE_SAMPLES = 5


def _pct(summary_: Mapping[str, float], key: str) -> float | None:
    """summary_[key] if it has MIN_PERCENTILE_SAMPLES samples behind it, else None ("—")."""
    if summary_.get("count", 0) < MIN_PERCENTILE_SAMPLES:
        return None
    return summary_.get(key)


def _us(ns: float | None) -> str:
    if ns is None:
        return "—"
    us = ns / 1e3
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def _signed(value: Any) -> Text:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return Text("—", style="dim")
    style = "green" if value > 0 else "red" if value < 0 else ""
    return Text(f"{value:+,.2f}", style=style)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1e3:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}m"


def position_text(pos: Any) -> Text:
    """A signed net quantity: LONG +10 (green), SHORT -10 (red), flat."""
    if isinstance(pos, bool) or not isinstance(pos, int):
        return Text("—", style="dim")
    if pos > 0:
        return Text(f"LONG {pos:+,}", style="green")
    if pos < 0:
        return Text(f"SHORT {pos:+,}", style="red")
    return Text("flat", style="dim")


def _table(title: str, *columns: tuple[str, str]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold cyan", box=box.SIMPLE_HEAD,
                  padding=(0, 1), pad_edge=False, expand=False)
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return table


def _counters(snaps: Mapping[str, Mapping[str, Any]], proc: str) -> Mapping[str, Any]:
    return (snaps.get(proc) or {}).get("counters") or {}


def strategies(snaps: Mapping[str, Mapping[str, Any]]
               ) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(name, counters, rates) of every snapshot that publishes per-symbol positions."""
    out = []
    for proc, snap in sorted(snaps.items()):
        counters = snap.get("counters") or {}
        if isinstance(counters.get("positions"), list) and isinstance(counters.get("symbols"),
                                                                      list):
            out.append((str(counters.get("name") or proc), counters, snap.get("rates") or {}))
    return out


# --- panels --------------------------------------------------------------------------------------

def prices_table(snaps: Mapping[str, Mapping[str, Any]], prices: Mapping[str, Quote] | None,
                 prev: Mapping[str, Quote] | None, mono_ns: int) -> Table:
    strats = strategies(snaps)
    cols = [("symbol", "left"), ("price", "right"), ("chg", "right"), ("tick", "right"),
            ("age", "right"), ("sentiment", "right")]
    cols += [(name, "center") for name, _, _ in strats]
    table = _table("Prices (shared memory) and positions", *cols)
    symbols: list[str] = list(prices or {})
    for _, counters, _ in strats:
        symbols += [s for s in counters["symbols"] if s not in symbols]
    for sym in symbols:
        quote = (prices or {}).get(sym)
        row: list[RenderableType] = [Text(sym, style="bold")]
        if quote is None or not math.isfinite(quote.price):
            row += [Text("—", style="dim"), "", "", ""]
        else:
            old = (prev or {}).get(sym)
            change = Text("")
            if old is not None and math.isfinite(old.price) and old.price != quote.price:
                up = quote.price > old.price
                change = Text(f"{'▲' if up else '▼'}{abs(quote.price - old.price):.2f}",
                              style="green" if up else "red")
            age = (mono_ns - quote.write_ns) / 1e9 if quote.write_ns and mono_ns else None
            row += [f"{quote.price:,.2f}", change, f"{quote.tick_seq:,}", _age(age)]
        # Last sentiment per symbol: from the first strategy that knows the symbol.
        sentiment = next((c["sentiment"][c["symbols"].index(sym)] for _, c, _ in strats
                          if sym in c["symbols"] and isinstance(c.get("sentiment"), list)
                          and len(c["sentiment"]) == len(c["symbols"])), None)
        row.append(_num(sentiment, "d"))
        for _, counters, _ in strats:
            syms, positions = counters["symbols"], counters["positions"]
            pos = None
            if sym in syms and len(positions) == len(syms):
                pos = positions[syms.index(sym)]
            row.append(position_text(pos))
        table.add_row(*row)
    if prices is None:
        table.caption = "not attached to the price book yet"
        table.caption_style = "yellow"
        table.caption_justify = "left"
    return table


def health_table(snaps: Mapping[str, Mapping[str, Any]], now: float, stats_interval: float,
                 alive: Callable[[int], bool] | None) -> Table:
    table = _table("Processes", ("process", "left"), ("pid", "right"), ("state", "left"),
                   ("snapshot", "right"), ("uptime", "right"))
    names = list(PROCESSES) + sorted(p for p in snaps if p not in PROCESSES)
    for proc in names:
        snap = snaps.get(proc)
        h = health(snap, now, stats_interval, alive)
        uptime = (snap or {}).get("uptime_s")
        table.add_row(proc, _num((snap or {}).get("pid"), "d"),
                      Text(h.state, style=HEALTH_STYLE[h.state]),
                      _age(h.age_s), _age(uptime) if isinstance(uptime, (int, float)) else "—")
    return table


def flow_table(snaps: Mapping[str, Mapping[str, Any]]) -> Table:
    table = _table("Flow", ("hop", "left"), ("per s", "right"), ("total", "right"))
    for proc, key, label in summary.expand(summary.FLOW, snaps):
        snap = snaps.get(proc)
        if snap is None or key not in (snap.get("counters") or {}):
            continue
        rate = (snap.get("rates") or {}).get(key)
        table.add_row(label.replace(" (ticks x subscribers)", ""), _rate(rate),
                      _num(snap["counters"][key]))
    replay = _counters(snaps, "gateway")
    rows, sent = replay.get("replay_rows"), replay.get("replay_sent")
    if isinstance(rows, int) and isinstance(sent, int) and rows > 0:
        state = "finished" if replay.get("replay_done") else f"pass {max(sent - 1, 0) // rows + 1}"
        table.caption = f"replay: row {sent % rows or rows:,} of {rows:,}, {state}"
        table.caption_justify = "left"
    return table


def latency_rows(snaps: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per hop: window (last interval) and cumulative p50/p99 in ns, via telemetry.summarize."""
    rows = []
    for proc, key, label in summary.expand(summary.LATENCY, snaps):
        if key not in LATENCY_SHOWN:
            continue
        hist = ((snaps.get(proc) or {}).get("latency") or {}).get(key)
        if not hist:
            continue
        window = telemetry.summarize(hist.get("window") or [])
        total = telemetry.summarize(hist.get("pairs") or [], hist.get("max"))
        rows.append({"label": label, "count": total.get("count", 0),
                     "w50": _pct(window, "p50"), "w99": _pct(window, "p99"),
                     "p50": _pct(total, "p50"), "p99": _pct(total, "p99")})
    return rows


def latency_table(snaps: Mapping[str, Mapping[str, Any]]) -> Table:
    table = _table("Latency, us (last interval | since start)", ("hop", "left"),
                   ("p50", "right"), ("p99", "right"), ("p50", "right"), ("p99", "right"),
                   ("count", "right"))
    for row in latency_rows(snaps):
        table.add_row(row["label"], _us(row["w50"]), _us(row["w99"]), _us(row["p50"]),
                      _us(row["p99"]), _num(row["count"]))
    if not table.row_count:
        table.add_row(Text("no samples yet", style="dim"), "", "", "", "", "")
    else:
        table.caption = f"— : fewer than {MIN_PERCENTILE_SAMPLES} samples"
        table.caption_style = "dim"
        table.caption_justify = "left"
    return table


def _pnl_rows(pnl: Any) -> dict[str, dict[str, Mapping[str, Any]]]:
    """{client: {symbol: row}} from the published `pnl`, skipping anything not shaped so (e.g. a
    totals entry)."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    if not isinstance(pnl, Mapping):
        return out
    for client, by_symbol in pnl.items():
        if not isinstance(by_symbol, Mapping):
            continue
        rows = {sym: row for sym, row in by_symbol.items()
                if isinstance(row, Mapping) and "position" in row}
        if rows:
            out[str(client)] = rows
    return out


def pnl_table(snaps: Mapping[str, Mapping[str, Any]]) -> RenderableType:
    counters = _counters(snaps, "order_manager")
    rows = _pnl_rows(counters.get("pnl"))
    if "pnl" not in counters:
        return Text.assemble(("PnL (OrderManager)  ", "bold cyan"),
                             ("n/a", "bold"), (": the OrderManager publishes no pnl", "dim"))
    table = _table("PnL (OrderManager, marked to shared memory)", ("client", "left"),
                   ("symbol", "left"), ("position", "right"), ("avg price", "right"),
                   ("realized", "right"), ("unrealized", "right"), ("total", "right"))
    for client, by_symbol in rows.items():
        for sym, row in by_symbol.items():
            realized, unrealized = row.get("realized"), row.get("unrealized")
            both = realized + unrealized if isinstance(realized, (int, float)) and isinstance(
                unrealized, (int, float)) else None
            table.add_row(client, sym, _num(row.get("position"), ",d"),
                          _num(row.get("avg_price"), ",.2f"), _signed(realized),
                          _signed(unrealized), _signed(both))
    totals = counters.get("pnl_totals")
    if not isinstance(totals, Mapping):
        totals = pnl_mod.totals(rows)
    table.add_row(Text("total", style="bold"), "", "", "", _signed(totals.get("realized")),
                  _signed(totals.get("unrealized")), _signed(totals.get("total")))
    return table


def orders_table(snaps: Mapping[str, Mapping[str, Any]]) -> Table:
    """Orders (count, rate) beside the problem counters, which stay visible when zero."""
    table = _table("Orders and problems", ("orders", "left"), ("count", "right"),
                   ("per s", "right"), ("problems", "left"), ("count", "right"))
    orders: list[tuple[str, Any, Any]] = []
    for name, counters, rates in strategies(snaps):
        orders += [(f"{name} {key}", counters.get(key), rates.get(key))
                   for key in ("orders", "acks", "rejects", "refused")]
    om = snaps.get("order_manager") or {}
    orders += [(f"order_manager {key}", om["counters"][key], (om.get("rates") or {}).get(key))
               for key in ("orders", "rejects") if key in (om.get("counters") or {})]
    problems = [(label if proc == "strategy" or "." not in proc
                 else f"{proc.partition('.')[2]} {label}", _counters(snaps, proc)[key])
                for proc, key, label in summary.expand(PROBLEMS, snaps)
                if key in _counters(snaps, proc)]
    for k in range(max(len(orders), len(problems))):
        row: list[RenderableType] = ["", "", ""]
        if k < len(orders):
            label, count, rate = orders[k]
            row = [label, _num(count), _rate(rate)]
        if k < len(problems):
            label, count = problems[k]
            shown = ("ON" if count else "off") if isinstance(count, bool) else _num(count)
            row += [label, Text(shown, style="bold red" if count else "")]
        else:
            row += ["", ""]
        table.add_row(*row)
    return table


def strategies_table(snaps: Mapping[str, Mapping[str, Any]]) -> Table:
    """One row per strategy process: its client name, class and order counters."""
    table = _table("Strategies", ("strategy", "left"), ("class", "left"),
                   *((col, "right") for _, col in STRATEGY_SHOWN))
    for proc in summary.strategy_processes(dict(snaps)):
        counters = _counters(snaps, proc)
        table.add_row(str(counters.get("name") or proc), str(counters.get("class") or "—"),
                      *(_num(counters.get(key)) for key, _ in STRATEGY_SHOWN))
    if not table.row_count:
        table.add_row(Text("no strategy snapshot yet", style="dim"), "",
                      *("" for _ in STRATEGY_SHOWN))
    return table


class SideBySide:
    """Two panels side by side where the terminal is wide enough, one under the other where it
    is not; measured as its natural width, so the frame around it fits the content."""

    GAP = 3

    def __init__(self, left: RenderableType, right: RenderableType) -> None:
        self.left, self.right = left, right

    def _widths(self, console: Console, options: ConsoleOptions) -> tuple[Measurement, ...]:
        return tuple(Measurement.get(console, options, r) for r in (self.left, self.right))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        left, right = self._widths(console, options)
        return Measurement(max(left.minimum, right.minimum),
                           left.maximum + self.GAP + right.maximum)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        left, right = self._widths(console, options)
        if left.maximum + self.GAP + right.maximum <= options.max_width:
            grid = Table.grid(padding=(0, self.GAP))
            grid.add_row(self.left, self.right)
            yield grid
        else:
            yield Group(self.left, self.right)


def render(snaps: Mapping[str, Mapping[str, Any]], prices: Mapping[str, Quote] | None, *,
           now: float, mono_ns: int = 0, stats_interval: float = 1.0,
           alive: Callable[[int], bool] | None = None,
           prev_prices: Mapping[str, Quote] | None = None, source: str = "",
           footer: str = "q or Ctrl+C quits") -> RenderableType:
    """The whole dashboard. `now` is wall time (snapshot ages), `mono_ns` CLOCK_MONOTONIC ns
    (price ages), `alive(pid)` says whether a process still exists (None: assume it does)."""
    top = SideBySide(prices_table(snaps, prices, prev_prices, mono_ns),
                     health_table(snaps, now, stats_interval, alive))
    middle = SideBySide(flow_table(snaps), latency_table(snaps))
    bottom = SideBySide(pnl_table(snaps), orders_table(snaps))
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    title = Text.assemble(("tradestack", "bold magenta"), f"  {clock}  ", (source, "dim"),
                          "  ", (footer, "dim"))
    return Panel(Group(top, middle, bottom, strategies_table(snaps)), title=title,
                 title_align="left",
                 box=box.ROUNDED, padding=(0, 1), expand=False)
