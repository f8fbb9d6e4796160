"""Generate performance_report.md and its PNG plots from one benchmark run (never typed by hand).

    python bench/report.py                 # run every benchmark + the fault tests (~10 min), render
    python bench/report.py --json FILE     # re-render from a saved pytest-benchmark JSON
                           [--faults DIR]  # ... and the fault tests' recovery JSON files

Micro-benchmarks time an inner loop per round, so one round is one per-call sample (round time /
calls); process-level benchmarks run once and carry their own HdrHistogram percentiles (measured
inside the processes, see processes/shared/telemetry.py) in pytest-benchmark's extra_info. Ratios
compare rows measured in the same run, which is what survives a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from hdrh.histogram import HdrHistogram  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ext import footprint  # noqa: E402
from processes.shared import placement  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PLOTS = ROOT / "bench" / "plots"
REPORT = ROOT / "performance_report.md"
HEADLINE = RESULTS / "headline.md"   # the README's headline figure, generated from the same run
README = ROOT / "README.md"
HEADLINE_START = "<!-- headline:"    # the README's block between these lines is HEADLINE
HEADLINE_END = "<!-- /headline -->"
COMMAND = "python bench/report.py"
MICRO_GROUPS = ("shm-write", "shm-read", "framing", "encoding", "orders")
HOP_LABELS = {
    "tick_to_shm": "tick -> shm (OrderBook wrote the slot)",
    "tick_to_decision": "tick -> decision (Strategy computed the signal)",
    "send_to_order": "order send -> OrderManager received (one TCP hop)",
    "tick_to_order": "tick -> order received (OrderManager)",
    "om_ack": "order received -> ack sent (inside the OrderManager)",
    "order_to_ack": "order send -> ack (round trip)",
    "tick_to_ack": "tick -> ack (Strategy)",
}


# --- running ------------------------------------------------------------------------------------

def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, **(env or {})})


def run_benchmarks(json_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-q", "-p",
         "no:cacheprovider", f"--benchmark-json={json_path}"])


def run_faults(directory: Path) -> None:
    """The fault tests write their recovery times to TRADESTACK_FAULT_RESULTS."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.json"):
        old.unlink()
    # tests/stack/test_faults.py, tests/stack/test_shm_faults.py, tests/order_manager/...
    tests = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("test_*faults*.py"))]
    if tests:
        run([sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider"],
            env={"TRADESTACK_FAULT_RESULTS": str(directory)})


# --- helpers ------------------------------------------------------------------------------------

def fmt_ns(ns: float) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.0f} ns"


def fmt_us(us: Any) -> str:
    return "-" if us is None else f"{us:,.1f}"


def by_name(doc: dict) -> dict[str, dict]:
    return {b["name"]: b for b in doc["benchmarks"]}


def group(doc: dict, name: str) -> list[dict]:
    return [b for b in doc["benchmarks"] if b.get("group") == name]


def per_call_hist(bench: dict) -> HdrHistogram:
    """Per-call ns, one sample per round (round time / inner calls)."""
    stats = bench["stats"]
    calls = (bench.get("extra_info", {}).get("calls_per_round") or 1) * (stats.get("iterations")
                                                                         or 1)
    hist = HdrHistogram(1, 60_000_000_000, 3)
    for d in stats.get("data") or [stats["median"]]:
        hist.record_value(max(1, round(d / calls * 1e9)))
    return hist


def p50_ns(bench: dict | None) -> float | None:
    return None if bench is None else per_call_hist(bench).get_value_at_percentile(50)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


# --- sections -----------------------------------------------------------------------------------

def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return [f"- CPU: {cpu}, {os.cpu_count()} vCPUs; kernel {platform.release()}; "
            f"Python {platform.python_version()}",
            "- Method: `pytest bench --benchmark-only` (pytest-benchmark), one session, so every "
            "ratio below compares rows measured minutes apart on the same (shared, noisy) host.",
            "- Per-hop latencies are recorded inside the processes for every event "
            "(`processes/shared/telemetry.py`: one increment of the sample's HdrHistogram "
            "bucket in a native counts array, `ext._hist`, ~70 ns) and read from their final stats "
            "snapshots; percentiles are taken with the hdrhistogram package.",
            "- Clock: CLOCK_MONOTONIC ns, comparable across processes on one host.", ""]


def micro_tables(doc: dict) -> list[str]:
    out: list[str] = []
    for name in MICRO_GROUPS:
        rows = [b for b in group(doc, name) if b.get("extra_info", {}).get("calls_per_round")]
        if not rows:
            continue
        base = next((b for b in rows if "baseline" in b["name"]), None)
        base_p50 = p50_ns(base)
        body = []
        for b in sorted(rows, key=lambda r: p50_ns(r) or 0):
            h = per_call_hist(b)
            p50 = h.get_value_at_percentile(50)
            ratio = ""
            if base is not None and b is not base and p50:
                r = base_p50 / p50
                ratio = f"{r:.2f}x faster" if r >= 1 else f"{1 / r:.2f}x slower"
            elif b is base:
                ratio = "baseline"
            extra = b.get("extra_info", {})
            rate = extra.get("frames_per_s") or extra.get("ticks_per_s")
            body.append([f"`{b['name']}`", fmt_ns(p50), fmt_ns(h.get_value_at_percentile(99)),
                         fmt_ns(h.get_value_at_percentile(99.9)), fmt_ns(h.get_max_value()),
                         h.get_total_count(), f"{rate:,}/s" if rate else "", ratio])
        out += [f"### {name}", "", "Per call (one sample per round of "
                f"{rows[0]['extra_info']['calls_per_round']} calls):", ""]
        out += table(["benchmark", "p50", "p99", "p99.9", "max", "rounds", "items/s",
                      "vs baseline (p50)"], body)
    return out


def e2e_rows(doc: dict) -> dict[str, dict]:
    return {b["extra_info"]["layout"]: b["extra_info"] for b in group(doc, "e2e")
            if "layout" in b.get("extra_info", {})}


def spins(layout: str) -> bool:
    return any(v[1] != "block" for v in placement.LAYOUTS[layout].values())


def best_layout(rows: dict[str, dict], blocking_only: bool) -> str | None:
    """Lowest tick -> decision p50 + tick -> ack p50 + tick -> decision p99 (the tail counts as
    much as the median); `blocking_only` keeps the layouts with no busy loop (default-eligible)."""
    def score(info: dict) -> float:
        return sum(info.get(k) or float("inf") for k in (
            "tick_to_decision_p50_us", "tick_to_ack_p50_us", "tick_to_decision_p99_us"))
    pool = [n for n in rows if n in placement.LAYOUTS and not (blocking_only and spins(n))]
    return min(pool, key=lambda n: score(rows[n])) if pool else None


def placement_section(doc: dict) -> tuple[list[str], str | None]:
    rows = e2e_rows(doc)
    if not rows:
        return ["Not measured (no `e2e` rows in this run)."], None
    best = placement.DEFAULT_LAYOUT if placement.DEFAULT_LAYOUT in rows else best_layout(rows, True)
    fastest_blocking = best_layout(rows, True)
    fastest = best_layout(rows, False)
    any_info = next(iter(rows.values()))
    out = [f"The four real processes (`processes.supervisor.stack.Stack`, as `main.py` runs "
           "them) at "
           f"{any_info['tick_rate']:,} ticks/s, {any_info['seconds']:.0f} s per layout, every "
           "hop waking from idle. Layouts are `processes/shared/placement.py` LAYOUTS "
           "(`--layout NAME`). "
           "Latency in us, p50 / p99 / p99.9; ack percentiles rest on "
           f"~{any_info.get('orders', 0):,} orders per layout.", ""]
    body = []
    for name, info in rows.items():
        def trio(hop: str, i: dict = info) -> str:
            return " / ".join(fmt_us(i.get(f"{hop}_{k}_us")) for k in ("p50", "p99", "p99.9"))
        body.append([f"**{name}**" if name == best else name, _describe(name),
                     trio("tick_to_shm"), trio("tick_to_decision"), trio("tick_to_ack"),
                     info.get("orders", 0)])
    out += table(["layout", "placement (G, OB, S, OM)", "tick -> shm", "tick -> decision",
                  "tick -> ack", "orders"], body)
    out += ["The default layout (`processes/shared/placement.py` DEFAULT_LAYOUT, in bold) is "
            f"**{best}**. "
            "Scoring each layout by tick -> decision p50 + tick -> ack p50 + tick -> decision "
            f"p99, the best layout with no busy loop in this run is **{fastest_blocking}**, and "
            f"the best of all is **{fastest}**. Layouts that spin are options for a machine "
            "with a core to spare: the default must idle below 2 % of a core.",
            "",
            "The `-rt` layouts run each process at SCHED_FIFO (block mode only; without "
            "CAP_SYS_NICE they fall back to normal scheduling with a warning). A woken "
            "process then preempts the one below it at once instead of waiting for it to "
            "block, and background load cannot get between two hops. In "
            f"{placement.DEFAULT_LAYOUT} the rank is {rank_order(placement.DEFAULT_LAYOUT)}."]
    return out + [""], best


def rank_order(layout: str) -> str:
    """The layout's SCHED_FIFO processes, highest priority first ("Strategy, then ...")."""
    ranked = sorted(((rt[0], proc) for proc, (_cpus, _idle, *rt) in
                     placement.LAYOUTS[layout].items() if rt), reverse=True)
    return ", then ".join(PROC_NAMES[proc] for _prio, proc in ranked) or "none (no rt)"


PROC_NAMES = {"gateway": "Gateway", "orderbook": "OrderBook", "strategy": "Strategy",
              "order_manager": "OrderManager"}


def _describe(layout: str) -> str:
    parts = []
    for proc in ("gateway", "orderbook", "strategy", "order_manager"):
        cpus, idle, *rt = placement.LAYOUTS[layout][proc]
        where = "cpu" + ",".join(map(str, cpus)) if cpus else "any"
        parts.append(where + ("" if idle == "block" else f" {idle}") + (f" rt{rt[0]}" if rt
                                                                         else ""))
    return "; ".join(parts)


def cdf_plot(info: dict, layout: str) -> str | None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for hop, label in HOP_LABELS.items():
        pairs = info.get(f"{hop}_pairs")
        if not pairs:
            continue
        values, counts = zip(*pairs)
        total, acc, xs, ys = sum(counts), 0, [], []
        for v, c in zip(values, counts):
            acc += c
            xs.append(v / 1e3)
            ys.append(acc / total * 100)
        ax.plot(xs, ys, label=label, drawstyle="steps-post")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("latency (us, log scale)")
    ax.set_ylabel("percentile")
    ax.set_title(f"Latency CDF per hop, layout {layout}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, "latency_cdf.png")


def save(fig: Any, name: str) -> str:
    PLOTS.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(PLOTS / name, dpi=110)
    plt.close(fig)
    return f"bench/plots/{name}"


def throughput_section(doc: dict) -> tuple[list[str], dict]:
    rows = group(doc, "throughput")
    if not rows:
        return ["Not measured."], {}
    out: list[str] = []
    facts: dict = {}
    top = next((b["extra_info"] for b in rows if "test_max_sustained_rate" in b["name"]), None)
    if top:
        facts["max_rate"] = top.get("ticks_per_s")
        out += [f"Highest sustained Gateway -> OrderBook -> shared memory rate "
                f"(`gateway.tick_rate = 0`, {top.get('seconds', '?')} s): "
                f"**{top.get('ticks_per_s', 0):,} ticks/s**, {top.get('orderbook_gaps', 0)} "
                f"gaps, {top.get('gateway_dropped_batches', 0)} dropped batches.", ""]
    points = []
    for b in rows:
        info = b["extra_info"]
        if "target_ticks_per_s" not in info:
            continue
        points.append((info["target_ticks_per_s"], info))
    body, xs, p50s, p99s = [], [], [], []
    for target, info in points:
        achieved = info.get("ticks_per_s", 0)
        body.append([target if target == "max" else f"{target:,}", f"{achieved:,}",
                     " / ".join(fmt_us(info.get(f"orderbook_tick_to_shm_{k}_us"))
                                for k in ("p50", "p99", "p99_9", "max")),
                     " / ".join(fmt_us(info.get(f"tick_to_shm_{k}_us"))
                                for k in ("p50", "p99", "p99_9"))])
        if info.get("orderbook_tick_to_shm_p50_us") is not None and achieved:
            xs.append(achieved)
            p50s.append(info["orderbook_tick_to_shm_p50_us"])
            p99s.append(info["orderbook_tick_to_shm_p99_us"])
    if body:
        out += ["Latency vs load (us). *OrderBook's own* = every tick it recorded; *reader* = a "
                "busy-polling reader in the bench process sampling the newest tick per symbol.",
                ""]
        out += table(["target ticks/s", "achieved ticks/s",
                      "tick -> shm, OrderBook's own p50 / p99 / p99.9 / max",
                      "tick -> shm, reader p50 / p99 / p99.9"], body)
    if xs:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(xs, p50s, "o-", label="p50")
        ax.plot(xs, p99s, "s--", label="p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("achieved ticks/s (log)")
        ax.set_ylabel("tick -> shm latency, us (log)")
        ax.set_title("Latency vs tick rate (Gateway -> OrderBook -> shm)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        out += [f"![latency vs rate]({save(fig, 'latency_vs_rate.png')})", ""]
    return out, facts


def scale_section(doc: dict) -> list[str]:
    rows = group(doc, "scale")
    if not rows:
        return ["Not measured."]
    syms = sorted((b["extra_info"] for b in rows if "symbols" in b["extra_info"]),
                  key=lambda i: i["symbols"])
    subs = sorted((b["extra_info"] for b in rows if "subscribers" in b["extra_info"]),
                  key=lambda i: i["subscribers"])
    out: list[str] = []
    if syms:
        out += ["Symbols (Gateway + OrderBook at a fixed rate; latency from the OrderBook's own "
                "histogram, us):", ""]
        out += table(["symbols", "segment bytes", "achieved ticks/s", "p50 / p99 / p99.9"],
                     [[f"{i['symbols']:,}", f"{i.get('segment_bytes', 0):,}",
                       f"{i.get('ticks_per_s', 0):,}",
                       " / ".join(fmt_us(i.get(f"orderbook_tick_to_shm_{k}_us"))
                                  for k in ("p50", "p99", "p99_9"))] for i in syms])
    if subs:
        out += ["Subscribers (raw TCP clients of the Gateway; latency of the first frame of "
                "each read, us):", ""]
        out += table(["subscribers", "delivered ticks/s", "p50 / p99 / p99.9"],
                     [[i["subscribers"], f"{i.get('delivered_ticks_per_s', 0):,}",
                       " / ".join(fmt_us(i.get(f"tick_to_subscriber_{k}_us"))
                                  for k in ("p50", "p99", "p99_9"))] for i in subs])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data, key, lat, title in (
            (axes[0], syms, "symbols", "orderbook_tick_to_shm", "tick -> shm vs symbols"),
            (axes[1], subs, "subscribers", "tick_to_subscriber", "tick -> subscriber vs fan-out")):
        pts = [(i[key], i.get(f"{lat}_p50_us"), i.get(f"{lat}_p99_us")) for i in data
               if i.get(f"{lat}_p50_us") is not None]
        if pts:
            x, p50, p99 = zip(*pts)
            ax.plot(x, p50, "o-", label="p50")
            ax.plot(x, p99, "s--", label="p99")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel("us")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    out += [f"![scale curves]({save(fig, 'scale.png')})", ""]
    return out


LINK_LABEL = "across a veth link"   # the row of bench_multihost's split run


def link_section(doc: dict) -> list[str]:
    """bench/bench_multihost.py: the stack on one host, then split into a core and a trading
    host in two network namespaces over a veth link, back to back."""
    info = next((b["extra_info"] for b in group(doc, "e2e-link")
                 if "link_tick_to_ack_p50_us" in b.get("extra_info", {})), None)
    if not info:
        return ["Not measured (no `e2e-link` row in this run: it needs root and `ip netns`)."]
    out = ["`bench/bench_multihost.py`: `python main.py` on one host, then `--role core` in one "
           "network namespace and `--role trading` in another, joined by a veth pair and a "
           f"bridge; layout {info['layout']} on both, {info['tick_rate']:,} ticks/s, "
           f"{info['seconds']:g} s each, back to back. One kernel, so one CLOCK_MONOTONIC: "
           "tick -> ack is exact across the link. Latency in us, p50 / p99 / p99.9.", ""]
    hops = ("tick_to_shm", "tick_to_decision", "order_to_ack", "tick_to_ack")

    def trio(side: str, hop: str) -> str:
        return " / ".join(fmt_us(info.get(f"{side}_{hop}_{k}_us")) for k in ("p50", "p99",
                                                                             "p99.9"))
    body = [[label, *(trio(side, hop) for hop in hops), info.get(f"{side}_orders", 0)]
            for side, label in (("single", "one host"), ("link", LINK_LABEL))]
    out += table(["run", "tick -> shm", "tick -> decision", "order send -> ack",
                  "tick -> ack", "orders"], body)
    ratio = info.get("ratio_tick_to_ack_p50")
    if ratio is not None:
        out += [f"tick -> ack p50 {LINK_LABEL}: **{ratio:.2f}x** the one-host run's. Every "
                "hop that crosses the link (prices, news, order, ack) goes through a veth pair and "
                "the bridge instead of loopback; on real hosts add the wire and the NICs.", ""]
    return out


def orders_section(doc: dict) -> list[str]:
    rows = [b["extra_info"] for b in group(doc, "orders") if "placement" in b["extra_info"]]
    if not rows:
        return []
    out = ["Order -> ack round trip against the real OrderManager vs a raw echo server (the "
           "loopback floor), measured interleaved in one run (us):", ""]
    out += table(["placement", "OrderManager p50 / p99 / p99.9", "echo floor p50 / p99 / p99.9",
                  "ratio p50"],
                 [[i["placement"], " / ".join(fmt_us(i.get(f"om_rtt_{k}_us"))
                                              for k in ("p50", "p99", "p99_9")),
                   " / ".join(fmt_us(i.get(f"floor_rtt_{k}_us")) for k in ("p50", "p99", "p99_9")),
                   f"{i.get('rtt_p50_ratio_ours_over_floor', 0):.2f}x"] for i in rows])
    return out


def flood_rows(doc: dict) -> list[dict]:
    return [b["extra_info"] for b in group(doc, "flood") if "max_gap_ms" in b["extra_info"]]


def flood_section(doc: dict) -> list[str]:
    rows = flood_rows(doc)
    if not rows:
        return ["Not measured (no `flood` row in this run)."]
    first = rows[0]
    out = ["`bench/bench_flood.py`: the real stack at 1,000 ticks/s; one raw TCP client sends new "
           "valid orders to the OrderManager as fast as it takes them (reading its acks) for "
           f"{first['flood_seconds']:g} s, while a watcher above every real-time rank collects "
           "each price write in the book. Gap = time between consecutive writes during the "
           f"flood (bound: < {first['max_gap_bound_ms']:g} ms). Over the flood, from /proc: CPU "
           "ms and blocks (voluntary context switches) per process, ksoftirqd and NET_RX "
           "softirqs on the stack's core, and the Strategy's own order -> ack meanwhile (what one "
           "client's flood costs another); the kernel's real-time throttle is "
           f"sched_rt_runtime_us = {first['rt_runtime_us']:,} per 1 s.", ""]
    body = [[f"`{i['variant']}`", f"**{i['max_gap_ms']:,.1f}**",
             "yes" if i["max_gap_ok"] else "**no**",
             " / ".join(fmt_us(i.get(f"gap_{k}_us")) for k in ("p50", "p99", "p99_9")),
             f"{i['writes_per_s_before']:,} / {i['writes_per_s_during']:,}",
             f"{i['flood_acks_per_s']:,}", str(i["om_rt_demotions"]),
             f"{i['flood_order_manager_cpu_ms']:,.0f} / {i['flood_order_manager_blocks']:,}",
             f"{i['flood_gateway_cpu_ms']:,.0f} / {i['flood_orderbook_cpu_ms']:,.0f}",
             f"{i.get('flood_ksoftirqd_cpu_ms', 0):,.1f}", f"{i['flood_net_rx']:,}",
             " / ".join(fmt_us(i.get(f"strategy_ack_{k}_us")) for k in ("p50", "p99"))]
            for i in rows]
    out += table(["run", "max gap ms", "< bound", "gap p50 / p99 / p99.9 us",
                  "writes/s before / during", "flood acks/s", "OM rank given up",
                  "OM cpu ms / blocks", "Gateway / OrderBook cpu ms", "ksoftirqd cpu ms",
                  "NET_RX", "Strategy's own order -> ack p50 / p99 us"], body)
    hazard = next((i for i in rows if i["om_rt_demotions"] == 0 and i["ranks"].get(
        "order_manager")), None)
    fixed = next((i for i in rows if i["variant"] == placement.DEFAULT_LAYOUT), None)
    if hazard:
        secs = hazard["flood_seconds"]
        out += [f"Without the budget (`{hazard['variant']}`) the OrderManager keeps its SCHED_FIFO "
                f"rank ({hazard['ranks']['order_manager']}) while flooded: it blocked "
                f"{hazard['flood_order_manager_blocks']} times in {secs:g} s and ran "
                f"{hazard['flood_order_manager_cpu_ms'] / (10 * secs):.0f} % of the core, while "
                f"the Gateway (rank {hazard['ranks']['gateway']}) and the OrderBook (rank "
                f"{hazard['ranks']['orderbook']}) got {hazard['flood_gateway_cpu_ms']:,.0f} and "
                f"{hazard['flood_orderbook_cpu_ms']:,.0f} ms; ksoftirqd ran "
                f"{hazard.get('flood_ksoftirqd_cpu_ms', 0):,.1f} ms"
                + (", so deferred softirqs are not what held the feed."
                   if hazard.get("flood_ksoftirqd_cpu_ms", 0) < 10 else "."), ""]
    if fixed:
        times = fixed["om_rt_demotions"]
        out += [f"With the budget (`{fixed['variant']}`, the default) the OrderManager gave up "
                f"its rank {times} time{'' if times == 1 else 's'}"
                " (`processes/shared/rt_budget.py`): the "
                f"flood got {fixed['flood_acks_per_s']:,} acks/s from what the feed left, and "
                f"the book was written {fixed['writes_per_s_during']:,} times/s."]
    return out + [""]


def faults_section(doc: dict, fault_dir: Path | None) -> list[str]:
    out: list[str] = []
    outage = next((b["extra_info"] for b in group(doc, "faults")), None)
    if outage:
        out += [f"**Gateway killed (-9) mid-stream, restarted after {outage['outage_s']} s** "
                "(`bench/bench_e2e.py::test_gateway_outage`, sampled every 20 ms): ticks into "
                f"shared memory during the outage: {outage['ticks_during_outage']}; orders sent "
                f"during it: {outage['orders_during_outage']}; first tick in shared memory "
                f"{outage['first_tick_after_restart_ms']} ms after the new Gateway reported "
                f"ready (the OrderBook's reconnect backoff); then {outage['ticks_after_restart']:,}"
                f" ticks and {outage['orders_after_restart']} orders in the next seconds.", ""]
    files = sorted(fault_dir.glob("*.json")) if fault_dir and fault_dir.exists() else []
    if files:
        body = []
        for f in files:
            try:
                rec = json.loads(f.read_text())
            except ValueError:
                continue
            details = rec.get("details", "")
            if isinstance(details, dict):
                details = ", ".join(f"{k}={v}" for k, v in details.items())
            rs = rec.get("recovery_s")
            body.append([f"`{rec.get('test', f.stem)}`",
                         "-" if rs is None else f"{rs:.3f} s", str(details)[:160]])
        out += ["Fault tests (`tests/**/test_*faults*.py`: process faults, order faults, and the "
                "shared-memory book corrupted while the stack runs; run by this script with "
                "TRADESTACK_FAULT_RESULTS set); recovery time as each test defines it:", ""]
        out += table(["test", "recovery", "details"], body)
    return out or ["Not measured."]


def footprint_section() -> list[str]:
    body = []
    for n in (5, 100, 10_000):
        f = footprint(n)
        body.append([f"{n:,}", f"{f['header_bytes']:,}", f"{f['symtab_bytes']:,}",
                     f"{f['slot_bytes']:,}", f"{f['total_bytes']:,}", f["bytes_per_symbol"],
                     f"{f['cache_lines']:,}"])
    return ["One segment per stack: a fixed header (magic, layout version, owner pid, heartbeat, "
            "control line with publish_seq and sleepers, 16 reader entries of one cache line "
            "each), a symbol table, then one 64-byte slot (one cache line: seq, price, sent_ns, "
            "tick_seq, write_ns) per symbol.", ""] + table(
        ["symbols", "header B", "symbol table B", "slots B", "total B", "B per symbol",
         "cache lines"], body)


def targets(doc: dict, best: str | None, facts: dict) -> tuple[list[str], list[str]]:
    """The issue's targets vs this run, and what was not reached."""
    names = by_name(doc)
    rows, missed = [], []

    def ratio(base: str, ours: str) -> float | None:
        b, o = p50_ns(names.get(base)), p50_ns(names.get(ours))
        return None if not b or not o else b / o

    def check(label: str, target: str, value: str, ok: bool | None, why: str = "") -> None:
        rows.append([label, target, value, "yes" if ok else ("-" if ok is None else "**no**")])
        if ok is False:
            missed.append(f"- {label}: {value} (target {target}). {why}".rstrip())

    w = ratio("test_write_numpy_lock_baseline", "test_write[cython]")
    r = ratio("test_read_numpy_lock_baseline", "test_read_slot[cython]")
    check("seqlock write vs Lock+numpy", ">= 3x", f"{w:.1f}x" if w else "-",
          None if w is None else w >= 3)
    check("seqlock read vs Lock+numpy", ">= 3x", f"{r:.1f}x" if r else "-",
          None if r is None else r >= 3)
    torn = next((b["extra_info"] for b in group(doc, "torn-reads")), None)
    check("torn reads", "0", f"{torn['torn']} in {torn['reads']:,} cross-process reads"
          if torn else "-", None if torn is None else torn["torn"] == 0)
    split = names.get("test_split_baseline", {}).get("extra_info", {}).get("frames_per_s")
    dec = names.get("test_decoder_compiled", {}).get("extra_info", {}).get("frames_per_s")
    fr = dec / split if dec and split else None
    check("framer frames/s vs split", ">= 2x", f"{fr:.1f}x" if fr else "-",
          None if fr is None else fr >= 2)
    floor = floor_info(doc)
    if floor:
        floor_targets(floor, check)
    else:
        check("tick -> ack p50 / floor p50", "<= 1.3x", "-", None,
              "This run has no bench/bench_floor.py results: the ratio needs both sides.")
    mr = facts.get("max_rate")
    check("Gateway -> shm sustained", ">= 1,000,000 ticks/s", f"{mr:,}/s" if mr else "-",
          None if mr is None else mr >= 1_000_000)
    default = next((i for i in flood_rows(doc) if i["variant"] == placement.DEFAULT_LAYOUT),
                   None)
    check(f"price writes during one client's order flood ({placement.DEFAULT_LAYOUT})",
          f"max gap < {default['max_gap_bound_ms']:g} ms" if default else "max gap < 50 ms",
          f"{default['max_gap_ms']:,.1f} ms" if default else "-",
          None if default is None else default["max_gap_ok"],
          "See \"Order flood\" for where the core's time went during the flood.")
    idle = next((b["extra_info"] for b in group(doc, "idle")), None)
    if idle:
        worst = max((v, k) for k, v in idle.items() if k.endswith("_cpu_percent"))
        check("idle CPU per process (no ticks)", "< 2 % of a core",
              f"max {worst[0]:.2f} % ({worst[1].removesuffix('_cpu_percent')})", worst[0] < 2)
    return table(["target", "goal", "this run", "met"], rows), missed


WHY_TAIL = ("The tail is work that shares the core at real-time priority: orders being made and "
            "booked, and each process's stats snapshot once a second.")


def floor_targets(info: dict, check: Any) -> None:
    """The issue's targets: ours/floor ratios at the same order rate, and the stack's tails."""
    where = (f"{info['layout']}, {info.get('stack_orders_per_s', 0):.0f} vs "
             f"{info.get('floor_orders_per_s', 0):.0f} orders/s")
    why = ("Each hop wakes a sleeping Python process; the floor pays those wake-ups too, so "
           "the excess is the stack's own code on the hop: see the per-hop rows of \"Against "
           "the Python floor\" for where it goes.")
    for hop, label, goal in (("tick_to_ack", "tick -> ack", 1.3),
                             ("tick_to_decision", "tick -> decision", 1.2)):
        ratio = info.get(f"ratio_{hop}_p50")
        value = "-" if ratio is None else (
            f"{ratio:.2f}x ({fmt_us(info.get(f'stack_{hop}_p50_us'))} vs "
            f"{fmt_us(info.get(f'floor_{hop}_p50_us'))} us)")
        check(f"{label} p50 / floor p50 ({where})", f"<= {goal}x", value,
              None if ratio is None else ratio <= goal, holding_hop(info, hop) or why)
    for hop, label in (("tick_to_decision", "tick -> decision"), ("tick_to_ack", "tick -> ack")):
        tail = info.get(f"stack_{hop}_p99_over_p50")
        floor_tail = info.get(f"floor_{hop}_p99_over_p50")
        check(f"{label} p99 / p50 ({info['layout']})", "<= 3x",
              "-" if tail is None else f"{tail:.1f}x (floor {floor_tail:.1f}x)",
              None if tail is None else tail <= 3, WHY_TAIL)


# The parts of each end-to-end hop that the stack and the floor both measure: (label, the hop
# that ends there, the hops before it within the same end-to-end hop).
HOP_PARTS = {
    "tick_to_ack": (("tick -> decision", "tick_to_decision", ()),
                    ("decision -> OrderManager received", "tick_to_order", ("tick_to_decision",)),
                    ("order received -> ack sent (inside the OrderManager)", "om_ack", ()),
                    ("ack sent -> ack handled by the Strategy", "order_to_ack",
                     ("send_to_order", "om_ack"))),
    "tick_to_decision": (("tick -> shm (OrderBook)", "tick_to_shm", ()),
                         ("shm -> decision (Strategy wake-up and on_tick)", "tick_to_decision",
                          ("tick_to_shm",))),
}


def holding_hop(info: dict, hop: str) -> str:
    """Which part of `hop` holds most of the stack's excess over the floor (p50 minus p50 per
    part), with the figures; "" when the run lacks a part."""
    gaps = []
    for label, end, before in HOP_PARTS.get(hop, ()):
        sides = []
        for side in ("stack", "floor"):
            total = info.get(f"{side}_{end}_p50_us")
            if total is None or any(info.get(f"{side}_{b}_p50_us") is None for b in before):
                return ""
            sides.append(total - sum(info[f"{side}_{b}_p50_us"] for b in before))
        gaps.append((sides[0] - sides[1], label, *sides))
    if not gaps:
        return ""
    total = info[f"stack_{hop}_p50_us"] - info[f"floor_{hop}_p50_us"]
    gap, label, ours, floor = max(gaps)
    return (f"Held by {label}: {fmt_us(ours)} vs the floor's {fmt_us(floor)} us p50, "
            f"{fmt_us(gap)} of the {fmt_us(total)} us gap (p50 differences of the parts; see "
            "\"Against the Python floor\" for every hop).")


def floor_info(doc: dict) -> dict | None:
    """extra_info of bench_floor's stack-vs-floor run, if this run has it."""
    return next((b["extra_info"] for b in group(doc, "e2e-floor")
                 if "ratio_tick_to_ack_p50" in b.get("extra_info", {})), None)


def floor_section(info: dict | None) -> list[str]:
    if not info:
        return ["Not measured (no `e2e-floor` row in this run)."]
    out = [f"`bench/bench_floor.py`: the stack and `bench/floor_pipeline.py` (the same four hops "
           "in minimal Python: selectors loops, split on `*`, the project's seqlock book and "
           "doorbell, a trivial decision, a parse-and-ack OrderManager) in turns, "
           f"{info['rounds']} rounds x {info['seconds_per_round']:g} s each, layout "
           f"**{info['layout']}** for both, {info.get('tick_rate', 0):,.0f} ticks/s. The floor "
           "orders at the stack's own orders-per-tick ratio: "
           f"{info.get('stack_orders_per_s', 0):.1f} orders/s (stack) vs "
           f"{info.get('floor_orders_per_s', 0):.1f} (floor). Each side's histograms are merged "
           "over its rounds; us.", ""]
    body = []
    for hop, label in HOP_LABELS.items():
        if f"stack_{hop}_p50_us" not in info or f"floor_{hop}_p50_us" not in info:
            continue
        for side in ("stack", "floor"):
            body.append([label if side == "stack" else "", side,
                         f"{info[f'{side}_{hop}_count']:,}",
                         *(fmt_us(info[f"{side}_{hop}_{k}_us"])
                           for k in ("p50", "p99", "p99.9", "max")),
                         f"{info[f'{side}_{hop}_p99_over_p50']:.1f}x"])
        body.append(["", "**stack / floor**", "", f"**{info[f'ratio_{hop}_p50']:.2f}x**",
                     f"{info[f'ratio_{hop}_p99']:.2f}x", "", "", ""])
    return out + table(["hop", "run", "samples", "p50", "p99", "p99.9", "max", "p99 / p50"],
                       body)


def headline(doc: dict, info: dict | None) -> str:
    """The README's headline sentence, from this run (bench/results/headline.md)."""
    when = doc.get("datetime", "?")[:10]
    if not info:
        return (f"<!-- generated by {COMMAND} on {when}; do not edit -->\n"
                "tick -> ack against the Python floor: not measured in this run.\n")
    return (f"<!-- generated by {COMMAND} on {when}; do not edit -->\n"
            f"tick -> ack p50 **{fmt_us(info['stack_tick_to_ack_p50_us'])} us**, "
            f"{info['ratio_tick_to_ack_p50']:.2f}x the "
            f"{fmt_us(info['floor_tick_to_ack_p50_us'])} us of a minimal four-process Python "
            f"pipeline with the same hops (`bench/floor_pipeline.py`); tick -> decision p50 "
            f"{fmt_us(info['stack_tick_to_decision_p50_us'])} us, "
            f"{info['ratio_tick_to_decision_p50']:.2f}x its "
            f"{fmt_us(info['floor_tick_to_decision_p50_us'])} us. Layout {info['layout']}, "
            f"{info.get('tick_rate', 0):,.0f} ticks/s, "
            f"{info.get('stack_orders_per_s', 0):.0f} orders/s, both measured interleaved in one "
            f"run on {when} (`performance_report.md`, \"Against the Python floor\").\n")


def render(doc: dict, fault_dir: Path | None) -> str:
    placement, best = placement_section(doc)
    thr, facts = throughput_section(doc)
    target_rows, missed = targets(doc, best, facts)
    e2e = e2e_rows(doc).get(best or "", {})
    out = ["# Performance report", "",
           f"Generated by `{COMMAND}` on {doc.get('datetime', '?')[:19]} UTC from one "
           "benchmark run; do not edit by hand (`python bench/report.py --json "
           "bench/results/latest.json` re-renders it).", "",
           "## Targets", "", *target_rows,
           "## Machine and method", "", *machine(),
           "## Against the Python floor", "", *floor_section(floor_info(doc)),
           "## Placement and idle strategy (end to end)", "", *placement,
           "## More than one host: across a veth link", "", *link_section(doc)]
    if e2e:
        latency_rows = [[HOP_LABELS[h], f"{e2e.get(f'{h}_count', 0):,}",
                         *(fmt_us(e2e.get(f"{h}_{k}_us")) for k in ("p50", "p99", "p99.9",
                                                                     "max"))]
                        for h in HOP_LABELS if e2e.get(f"{h}_count")]
        out += [f"Every hop in the {best} layout (us):", ""]
        out += table(["hop", "samples", "p50", "p99", "p99.9", "max"], latency_rows)
        plot = cdf_plot(e2e, best or "")
        if plot:
            out += [f"![latency CDF]({plot})", ""]
    out += ["## Micro-benchmarks", "", *micro_tables(doc), *orders_section(doc),
            "## Throughput", "", *thr, "## Scale", "", *scale_section(doc),
            "## Shared-memory footprint", "", *footprint_section(),
            "## Order flood: the price path while one client floods orders", "",
            *flood_section(doc),
            "## Faults: dropped connections and missing data", "",
            *faults_section(doc, fault_dir),
            "## Not reached, and why", ""]
    out += missed or ["Every target above was met in this run."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="render from this pytest-benchmark JSON")
    parser.add_argument("--faults", type=Path, default=RESULTS / "faults",
                        help="directory of fault-test recovery JSON files")
    parser.add_argument("--no-faults", action="store_true", help="do not run the fault tests")
    args = parser.parse_args(argv)
    json_path = args.json or RESULTS / "latest.json"
    if args.json is None:
        run_benchmarks(json_path)
        if not args.no_faults:
            run_faults(args.faults)
    doc = json.loads(json_path.read_text())
    REPORT.write_text(render(doc, args.faults))
    HEADLINE.parent.mkdir(parents=True, exist_ok=True)
    line = headline(doc, floor_info(doc))
    HEADLINE.write_text(line)
    splice_headline(README, line)
    print(f"wrote {REPORT}, {HEADLINE} and the headline in {README.name}")
    return 0


def splice_headline(readme: Path, line: str) -> None:
    """Put the headline between the README's markers, so its figure is this run's."""
    text = readme.read_text()
    start = text.index(HEADLINE_START)
    start = text.index("\n", start) + 1
    end = text.index(HEADLINE_END, start)
    readme.write_text(text[:start] + line + text[end:])


if __name__ == "__main__":
    raise SystemExit(main())
