"""Fixtures shared by the process-based benchmarks, and the summary table a run ends with.

pytest-benchmark's own table stays: it is the raw per-round data (seconds per round of an inner
loop, or one round of a whole process-level run) that users of the plugin know how to read and
that --benchmark-compare works on. It is not a latency figure, so the run ENDS with this file's
table: per end-to-end benchmark, per hop p50 / p99 / p99.9 / max in us from the processes' own
histograms (with the floor rows and ours/floor ratios), and per micro-benchmark the ns per call
at p50 / p99 with its ratio to the group's baseline. The micro figures are also written into each
benchmark's extra_info before pytest-benchmark saves its JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from bench.harness import Procs

MICRO_GROUPS = ("shm-write", "shm-read", "framing", "encoding", "orders")
E2E_HOPS = ("tick_to_shm", "tick_to_decision", "send_to_order", "om_ack", "order_to_ack",
            "tick_to_ack")
# The targets on the ratios ours/floor, checked in the summary and in bench/report.py.
FLOOR_TARGETS = (("tick_to_ack", "p50", 1.3), ("tick_to_decision", "p50", 1.2))
P99_OVER_P50 = 3.0


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Processes, sockets and segments of one benchmark, all undone even if it fails."""
    group = Procs()
    try:
        yield group
    finally:
        group.close()


# --- per-call figures of the micro-benchmarks --------------------------------------------------

def per_call_ns(bench: Any) -> HdrHistogram | None:
    """One sample per round: round time / calls in it (calls_per_round x iterations)."""
    calls = bench.extra_info.get("calls_per_round")
    data = getattr(getattr(bench, "stats", None), "data", None)
    if not calls or not data:
        return None
    calls *= bench.iterations or 1
    hist = HdrHistogram(1, 60_000_000_000, 3)
    for seconds in data:
        hist.record_value(max(1, round(seconds / calls * 1e9)))
    return hist


def annotate_micro(benchmarks: list[Any]) -> None:
    """ns_per_call_p50/_p99 and the ratio to the group's baseline (name has "baseline")."""
    by_group: dict[str, list[Any]] = {}
    for bench in benchmarks:
        if bench.group in MICRO_GROUPS and (hist := per_call_ns(bench)) is not None:
            bench.extra_info["ns_per_call_p50"] = hist.get_value_at_percentile(50)
            bench.extra_info["ns_per_call_p99"] = hist.get_value_at_percentile(99)
            by_group.setdefault(bench.group, []).append(bench)
    for rows in by_group.values():
        base = next((b for b in rows if "baseline" in b.name), None)
        if base is None:
            continue
        for bench in rows:
            # > 1: this row is that many times faster per call than the baseline
            bench.extra_info["baseline_over_this_p50"] = round(
                base.extra_info["ns_per_call_p50"] / bench.extra_info["ns_per_call_p50"], 2)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    """Before pytest-benchmark's own sessionfinish saves the JSON, so the figures are in it."""
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None:
        annotate_micro(bs.benchmarks)
    yield


# --- the closing table ----------------------------------------------------------------------

def _us(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f}"


def floor_lines(info: dict[str, Any]) -> list[str]:
    lines = [f"tradestack vs the Python floor (bench/floor_pipeline.py), layout {info['layout']}, "
             f"{info['rounds']} x {info['seconds_per_round']:g} s per side, interleaved; "
             f"orders/s stack {info.get('stack_orders_per_s')} floor "
             f"{info.get('floor_orders_per_s')}; ticks/s {info.get('stack_ticks_per_s')} / "
             f"{info.get('floor_ticks_per_s')} ({info.get('mode')})",
             f"  {'hop':<18} {'side':<12} {'count':>8} {'p50':>9} {'p99':>9} {'p99.9':>9} "
             f"{'max':>9} {'p99/p50':>8}"]
    for hop in E2E_HOPS:
        if f"stack_{hop}_p50_us" not in info or f"floor_{hop}_p50_us" not in info:
            continue
        for side in ("stack", "floor"):
            lines.append(f"  {hop:<18} {side:<12} {info[f'{side}_{hop}_count']:>8,} "
                         + " ".join(f"{_us(info[f'{side}_{hop}_{k}_us']):>9}"
                                    for k in ("p50", "p99", "p99.9", "max"))
                         + f" {info[f'{side}_{hop}_p99_over_p50']:>7.1f}x")
        lines.append(f"  {hop:<18} {'stack/floor':<12} {'':>8} "
                     f"{info[f'ratio_{hop}_p50']:>8.2f}x {info[f'ratio_{hop}_p99']:>8.2f}x")
    checks = []
    for hop, key, goal in FLOOR_TARGETS:
        ratio = info.get(f"ratio_{hop}_{key}")
        if ratio is not None:
            checks.append(f"{hop} {key} {ratio:.2f}x floor (<= {goal}x: "
                          f"{'yes' if ratio <= goal else 'NO'})")
    for hop in ("tick_to_decision", "tick_to_ack"):
        tail = info.get(f"stack_{hop}_p99_over_p50")
        if tail is not None:
            checks.append(f"{hop} p99/p50 {tail:.1f}x (<= {P99_OVER_P50:g}x: "
                          f"{'yes' if tail <= P99_OVER_P50 else 'NO'})")
    return lines + (["  targets: " + "; ".join(checks)] if checks else [])


def e2e_lines(benchmarks: list[Any]) -> list[str]:
    lines = [f"  {'benchmark':<34} {'hop':<18} {'count':>8} {'p50':>9} {'p99':>9} {'p99.9':>9} "
             f"{'max':>9}"]
    for bench in benchmarks:
        info = bench.extra_info
        for hop in E2E_HOPS:
            if f"{hop}_p50_us" in info:
                lines.append(f"  {bench.name:<34} {hop:<18} {info.get(f'{hop}_count', 0):>8,} "
                             + " ".join(f"{_us(info.get(f'{hop}_{k}_us')):>9}"
                                        for k in ("p50", "p99", "p99.9", "max")))
    return lines


def link_lines(info: dict[str, Any]) -> list[str]:
    """One host vs across a veth link (bench_multihost.py), per hop."""
    lines = [f"one host vs across a veth link (bench_multihost), layout {info['layout']}, "
             f"{info['seconds']:g} s each, us:",
             f"  {'hop':<18} {'side':<8} {'count':>8} {'p50':>9} {'p99':>9} {'p99.9':>9} "
             f"{'max':>9}"]
    for hop in E2E_HOPS:
        for side in ("single", "link"):
            if f"{side}_{hop}_p50_us" in info:
                lines.append(f"  {hop:<18} {side:<8} {info[f'{side}_{hop}_count']:>8,} "
                             + " ".join(f"{_us(info.get(f'{side}_{hop}_{k}_us')):>9}"
                                        for k in ("p50", "p99", "p99.9", "max")))
    return lines


def micro_lines(benchmarks: list[Any]) -> list[str]:
    lines = [f"  {'group':<10} {'benchmark':<44} {'p50 ns':>9} {'p99 ns':>9} "
             f"{'baseline/this p50':>18}"]
    rows = [b for b in benchmarks if "ns_per_call_p50" in b.extra_info]
    for bench in sorted(rows, key=lambda b: (MICRO_GROUPS.index(b.group),
                                             b.extra_info["ns_per_call_p50"])):
        info = bench.extra_info
        ratio = info.get("baseline_over_this_p50")
        lines.append(f"  {bench.group:<10} {bench.name:<44} {info['ns_per_call_p50']:>9,} "
                     f"{info['ns_per_call_p99']:>9,} "
                     f"{'-' if ratio is None else f'{ratio:.2f}x':>18}")
    return lines


def flood_lines(benchmarks: list[Any]) -> list[str]:
    """bench_flood: the longest price-write gap during one client's order flood, and why."""
    lines = [f"  {'variant':<30} {'max gap ms':>10} {'< bound':>8} {'gap p99 us':>10} "
             f"{'writes/s':>9} {'flood acks/s':>12} {'OM demoted':>10} {'OM cpu ms':>9} "
             f"{'OM blocks':>9} {'G+OB cpu ms':>11}"]
    for bench in benchmarks:
        i = bench.extra_info
        if "max_gap_ms" not in i:
            continue
        lines.append(f"  {i['variant']:<30} {i['max_gap_ms']:>10,.1f} "
                     f"{'yes' if i['max_gap_ok'] else 'NO':>8} {i['gap_p99_us']:>10,.1f} "
                     f"{i['writes_per_s_during']:>9,} {i['flood_acks_per_s']:>12,} "
                     f"{i['om_rt_demotions']:>10} {i['flood_order_manager_cpu_ms']:>9,.0f} "
                     f"{i['flood_order_manager_blocks']:>9} "
                     f"{i['flood_gateway_cpu_ms'] + i['flood_orderbook_cpu_ms']:>11,.0f}")
    return lines


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Last, after pytest-benchmark's table: the figures a reader wants, in us and ns."""
    bs = getattr(terminalreporter.config, "_benchmarksession", None)
    benchmarks = list(getattr(bs, "benchmarks", None) or [])
    if not benchmarks:   # --benchmark-disable, or no benchmark ran
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("=", "tradestack latency summary (in-process HdrHistograms)")
    floors = [b for b in benchmarks if b.group == "e2e-floor"]
    e2e = [b for b in benchmarks if b.group == "e2e"]
    if e2e:
        write("end to end per layout (bench_e2e), us:")
        for line in e2e_lines(e2e):
            write(line)
    micro = micro_lines(benchmarks)
    if len(micro) > 1:
        write("micro-benchmarks, ns per call (one sample per round):")
        for line in micro:
            write(line)
    for bench in (b for b in benchmarks if b.group == "e2e-link"):
        for line in link_lines(bench.extra_info):
            write(line)
    flood = flood_lines([b for b in benchmarks if b.group == "flood"])
    if len(flood) > 1:
        write("one client flooding orders (bench_flood), price writes during the flood:")
        for line in flood:
            write(line)
    for bench in floors:   # last: the headline comparison
        for line in floor_lines(bench.extra_info):
            write(line)
