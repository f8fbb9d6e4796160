"""The whole stack's figures from the processes' published snapshots (main.py prints it at exit).

Everything here reads files the processes wrote (processes.shared.telemetry); nothing asks a running
process for anything, so it works the same on a live stack (monitor) and after it stopped.
"""

from __future__ import annotations

from typing import Any

from processes.shared import telemetry

# (process, counter, what it counts): the flow of ticks and orders through the hops.
FLOW = (
    ("gateway", "ticks", "Gateway ticks generated"),
    ("gateway", "deliveries", "Gateway tick deliveries (ticks x subscribers)"),
    ("orderbook", "ticks", "OrderBook ticks written to shm"),
    ("strategy", "ticks", "Strategy ticks read from shm"),
    ("strategy", "decisions", "Strategy decisions"),
    ("strategy", "orders", "Strategy orders sent"),
    ("order_manager", "orders", "OrderManager orders booked"),
)
# (process, recorder, what it measures); all CLOCK_MONOTONIC differences.
LATENCY = (
    ("orderbook", "tick_to_shm", "tick -> shm write (OrderBook)"),
    ("strategy", "tick_to_decision", "tick -> decision (Strategy)"),
    ("order_manager", "send_to_order", "order send -> received (one TCP hop)"),
    ("order_manager", "tick_to_order", "tick -> order received (OrderManager)"),
    ("order_manager", "om_decoded", "  order read -> decoded (OrderManager)"),
    ("order_manager", "om_checked", "  order read -> validated + risk (OrderManager)"),
    ("order_manager", "om_journaled", "  order read -> order log written (OrderManager)"),
    ("order_manager", "om_ack", "order read -> ack sent (OrderManager)"),
    ("strategy", "submit_to_sent", "order submit -> send() returned (Strategy)"),
    ("strategy", "order_to_ack", "order send -> ack (round trip)"),
    ("strategy", "reply_handled", "ack read -> on_order_reply done (Strategy)"),
    ("strategy", "tick_to_ack", "tick -> ack (Strategy)"),
)
# (process, counter) of problems worth a line even when zero.
PROBLEMS = (
    ("order_manager", "rejects"), ("strategy", "rejects"), ("strategy", "unsent"),
    ("orderbook", "malformed"), ("orderbook", "unknown"), ("orderbook", "gaps"),
    ("orderbook", "reconnects"), ("strategy", "reconnects"), ("gateway", "dropped_batches"),
)


# Per strategy process: (counter, column) of its row in the strategies table.
STRATEGY_COLUMNS = (("orders", "orders"), ("acks", "acks"), ("rejects", "rejects"),
                    ("refused", "refused"), ("strategy_errors", "errors"), ("held", "held"))


def strategy_processes(snaps: dict[str, Any]) -> list[str]:
    """The strategy processes among the snapshots: "strategy" first, then "strategy.NAME"."""
    return sorted((p for p in snaps if p.partition(".")[0] == "strategy"),
                  key=lambda p: (p != "strategy", p))


def expand(rows: tuple[tuple[str, str, str], ...], snaps: dict[str, Any]
            ) -> list[tuple[str, str, str]]:
    """A "strategy" row once per strategy process; "strategy.NAME" labels name it."""
    out = []
    for proc, key, label in rows:
        if proc != "strategy":
            out.append((proc, key, label))
            continue
        for name in strategy_processes(snaps) or ["strategy"]:
            extra = name.partition(".")[2]
            out.append((name, key, f"{label} [{extra}]" if extra else label))
    return out


def strategies(snaps: dict[str, Any]) -> list[dict[str, Any]]:
    """Per strategy process: its process name, client name, class and order counters."""
    rows = []
    for proc in strategy_processes(snaps):
        counters = snaps[proc].get("counters") or {}
        rows.append({"process": proc, "name": counters.get("name", proc),
                     "class": counters.get("class", ""),
                     **{key: counters.get(key) for key, _ in STRATEGY_COLUMNS}})
    return rows


def build(snaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Structured summary: flow (count, mean rate), latency percentiles (ns), problem counters,
    one row per strategy process."""
    flow = []
    for proc, key, label in expand(FLOW, snaps):
        snap = snaps.get(proc)
        if snap is None or key not in snap.get("counters", {}):
            continue
        count = snap["counters"][key]
        uptime = max(snap.get("uptime_s", 0.0), 1e-9)
        flow.append({"process": proc, "counter": key, "label": label, "count": count,
                     "per_s": count / uptime})
    latency = []
    for proc, key, label in expand(LATENCY, snaps):
        hist = snaps.get(proc, {}).get("latency", {}).get(key)
        if not hist or not hist.get("count"):
            continue
        latency.append({"process": proc, "name": key, "label": label,
                        **telemetry.summarize(hist["pairs"], hist.get("max"))})
    problems = {f"{proc}.{key}": snaps[proc]["counters"][key]
                for proc, key, _ in expand(tuple((p, k, "") for p, k in PROBLEMS), snaps)
                if key in snaps.get(proc, {}).get("counters", {})}
    return {"flow": flow, "latency": latency, "problems": problems,
            "strategies": strategies(snaps), "processes": sorted(snaps)}


def render(summary: dict[str, Any]) -> str:
    lines = ["", "tradestack summary (from the processes' final stats snapshots)"]
    if summary["flow"]:
        lines.append(f"  {'flow':<48} {'count':>12} {'per s':>12}")
        for row in summary["flow"]:
            lines.append(f"  {row['label']:<48} {row['count']:>12,} {row['per_s']:>12,.0f}")
    if summary["latency"]:
        lines.append(f"  {'latency (us)':<48} {'count':>9} {'p50':>8} {'p99':>8} {'p99.9':>8}"
                     f" {'max':>9}")
        for row in summary["latency"]:
            lines.append(f"  {row['label']:<48} {row['count']:>9,} {row['p50'] / 1e3:>8.1f}"
                         f" {row['p99'] / 1e3:>8.1f} {row['p99.9'] / 1e3:>8.1f}"
                         f" {row['max'] / 1e3:>9.1f}")
    if summary.get("strategies"):
        heads = "".join(f" {col:>8}" for _, col in STRATEGY_COLUMNS)
        lines.append(f"  {'strategy':<20} {'class':<48}{heads}")
        for row in summary["strategies"]:
            cells = "".join(f" {row[key] if row[key] is not None else '-':>8}"
                            for key, _ in STRATEGY_COLUMNS)
            lines.append(f"  {row['name']:<20} {row['class']:<48}{cells}")
    if summary["problems"]:
        lines.append("  " + "  ".join(f"{k}={v}" for k, v in summary["problems"].items()))
    if not summary["processes"]:
        lines.append("  (no snapshots found)")
    return "\n".join(lines)
