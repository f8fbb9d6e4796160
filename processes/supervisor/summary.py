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
    ("order_manager", "om_ack", "order read -> ack sent (OrderManager)"),
    ("strategy", "order_to_ack", "order send -> ack (round trip)"),
    ("strategy", "tick_to_ack", "tick -> ack (Strategy)"),
)
# (process, counter) of problems worth a line even when zero.
PROBLEMS = (
    ("order_manager", "rejects"), ("strategy", "rejects"), ("strategy", "unsent"),
    ("orderbook", "malformed"), ("orderbook", "unknown"), ("orderbook", "gaps"),
    ("orderbook", "reconnects"), ("strategy", "reconnects"), ("gateway", "dropped_batches"),
)


def build(snaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Structured summary: flow (count, mean rate), latency percentiles (ns), problem counters."""
    flow = []
    for proc, key, label in FLOW:
        snap = snaps.get(proc)
        if snap is None or key not in snap.get("counters", {}):
            continue
        count = snap["counters"][key]
        uptime = max(snap.get("uptime_s", 0.0), 1e-9)
        flow.append({"process": proc, "counter": key, "label": label, "count": count,
                     "per_s": count / uptime})
    latency = []
    for proc, key, label in LATENCY:
        hist = snaps.get(proc, {}).get("latency", {}).get(key)
        if not hist or not hist.get("count"):
            continue
        latency.append({"process": proc, "name": key, "label": label,
                        **telemetry.summarize(hist["pairs"], hist.get("max"))})
    problems = {f"{proc}.{key}": snaps[proc]["counters"][key] for proc, key in PROBLEMS
                if key in snaps.get(proc, {}).get("counters", {})}
    return {"flow": flow, "latency": latency, "problems": problems,
            "processes": sorted(snaps)}


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
    if summary["problems"]:
        lines.append("  " + "  ".join(f"{k}={v}" for k, v in summary["problems"].items()))
    if not summary["processes"]:
        lines.append("  (no snapshots found)")
    return "\n".join(lines)
