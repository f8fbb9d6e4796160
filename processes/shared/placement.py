"""Where each process runs and how it waits: the placement keys, the layouts, and applying them.

Every process section of the config ([gateway], [orderbook], [strategy], [strategies.NAME],
[order_manager]) is a Placement plus its own keys; a key left unset takes its value from
DEFAULT_LAYOUT's entry in LAYOUTS, so the default layout is stated once, in that table.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from processes.shared.config import Config

PROCESSES = ("gateway", "orderbook", "strategy", "order_manager")
IDLE_MODES = ("block", "spin", "hybrid")
PLACEMENT_KEYS = ("cpus", "idle", "spin_us", "rt_priority", "rt_budget_us")

# {layout: {process: (cpus, idle) or (cpus, idle, rt_priority)}}. Measured in
# performance_report.md ("Placement"); `--layout NAME` applies one, explicit keys override it.
# cpus that this machine does not have are dropped at start-up (unpinned if none remain).
LAYOUTS: dict[str, dict[str, tuple[list[int], str] | tuple[list[int], str, int]]] = {
    "unpinned": {p: ([], "block") for p in PROCESSES},
    "one-core": {p: ([0], "block") for p in PROCESSES},
    "spread": {"gateway": ([0], "block"), "orderbook": ([0], "block"),
               "strategy": ([1], "block"), "order_manager": ([1], "block")},
    "strategy-spin": {"gateway": ([0], "block"), "orderbook": ([0], "block"),
                      "strategy": ([1], "spin"), "order_manager": ([0], "block")},
    "strategy-hybrid": {p: ([0], "hybrid" if p == "strategy" else "block") for p in PROCESSES},
    # SCHED_FIFO priorities (the third field) rank the processes on a shared core: the Strategy
    # first (a tick is decided the moment it lands), the OrderManager just below it, then the
    # feed in pipeline order (a woken OrderBook preempts the Gateway that just sent to it).
    # The OrderManager runs the moment the Strategy blocks after sending an order, so the order
    # never waits behind the feed's next tick (bench/compare_ranks.py). Above the Strategy it
    # would preempt it inside send() and book the whole order there, delaying the rest of the
    # Strategy's tick without making the ack earlier. Background load cannot delay any hop.
    "one-core-rt": {"gateway": ([0], "block", 20), "orderbook": ([0], "block", 30),
                    "strategy": ([0], "block", 40), "order_manager": ([0], "block", 35)},
    # The feed half (G, OB) and the order half (S, OM) each on a core of its own, real-time.
    "spread-rt": {"gateway": ([0], "block", 20), "orderbook": ([0], "block", 30),
                  "strategy": ([1], "block", 40), "order_manager": ([1], "block", 10)},
    # The Strategy busy-polls the book on CPU1 (never sleeps: no wake-up on the tick path);
    # the others block, real-time, on CPU0.
    "strategy-spin-rt": {"gateway": ([0], "block", 20), "orderbook": ([0], "block", 30),
                         "order_manager": ([0], "block", 10), "strategy": ([1], "spin")},
    # The Strategy busy-polls on CPU1; the real-time OrderManager shares CPU1 and preempts the
    # spinner the moment an order arrives, so the order hop never crosses cores.
    "spin-om-rt": {"gateway": ([0], "block", 20), "orderbook": ([0], "block", 30),
                   "strategy": ([1], "spin"), "order_manager": ([1], "block", 10)},
    # Feed and decision real-time on CPU0; the OrderManager busy-polls CPU1, always warm.
    "om-spin-rt": {"gateway": ([0], "block", 20), "orderbook": ([0], "block", 30),
                   "strategy": ([0], "block", 40), "order_manager": ([1], "spin")},
}

# The default for small machines: the fastest robust layout measured (performance_report.md,
# "Placement"). Every process blocks when idle (no busy loop); without CAP_SYS_NICE the
# real-time priorities are skipped with a warning (one-core then).
DEFAULT_LAYOUT = "one-core-rt"
SPIN_US = 50.0   # no layout sets it: only idle = "hybrid" reads it
# us of CPU per check of a real-time process's share of its core: using this much in less than
# twice the time (over half the core) drops it to normal scheduling until it is idle again
# (processes/shared/rt_budget.py says why). The kernel counts CPU time in scheduler ticks; a
# process working as intended uses a few percent, so only a flood of work reaches half.
RT_BUDGET_US = 4000


@dataclass
class Placement:
    """The placement keys of one process section (their meaning: tradestack.toml, top)."""

    cpus: list[int] = field(default_factory=list)   # [] = unpinned
    idle: str = "block"                             # block | spin | hybrid
    spin_us: float = SPIN_US                        # hybrid: spin this long before blocking
    rt_priority: int = 0                            # 0 = normal; 1-99 = SCHED_FIFO
    rt_budget_us: int = RT_BUDGET_US                # CPU us per share check; 0 = none

    def placement_problem(self, section: str) -> str | None:
        """What is wrong with these keys (naming `section`), or None."""
        if self.idle not in IDLE_MODES:
            return f"{section}.idle: one of {', '.join(IDLE_MODES)}"
        if any(c < 0 for c in self.cpus):
            return f"{section}.cpus: CPU numbers are >= 0"
        if not 0 <= self.spin_us <= 1_000_000:
            return f"{section}.spin_us: 0..1000000"
        if not 0 <= self.rt_priority <= 99:
            return f"{section}.rt_priority: 0 (normal) or 1..99 (SCHED_FIFO)"
        if not 0 <= self.rt_budget_us <= 10_000_000:
            return f"{section}.rt_budget_us: 0 (never) or 1..10000000"
        if self.rt_priority and self.idle != "block":
            # A real-time process that never sleeps starves everything else on its core,
            # including the softirq work loopback TCP needs.
            return f"{section}.rt_priority: only with idle = \"block\""
        return None


def layout_placement(layout: str, process: str) -> dict[str, Any]:
    """{key: value} of `process` in `layout` (KeyError for an unknown layout)."""
    cpus, idle, *rt = LAYOUTS[layout][process]
    return {"cpus": list(cpus), "idle": idle, "rt_priority": rt[0] if rt else 0}


def default_section(cls: type, process: str) -> Any:
    """A fresh `cls` section (a Placement subclass) with DEFAULT_LAYOUT's placement."""
    return cls(**layout_placement(DEFAULT_LAYOUT, process))


def layout_overrides(name: str) -> dict[str, Any]:
    """The {"section.key": value} settings of a named layout (ValueError names the choices)."""
    if name not in LAYOUTS:
        raise ValueError(f"layout {name!r}: one of {', '.join(LAYOUTS)}")
    return {f"{process}.{key}": value for process in LAYOUTS[name]
            for key, value in layout_placement(name, process).items()}


# --- applying a placement to this process ------------------------------------------------------
def set_rt_priority(name: str, priority: int, log: logging.Logger) -> int:
    """SCHED_FIFO at `priority` (0 = leave normal scheduling); returns what was applied."""
    if not priority:
        return 0
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.warning("%s.rt_priority %d not applied (%s); running with normal scheduling",
                    name, priority, exc)
        return 0
    return priority


def unpaced(cfg: Config) -> bool:
    """The Gateway sends prices or news as fast as its clients drain: the pipeline never
    blocks."""
    g = cfg.gateway
    return (g.csv_speed == 0 if g.csv else g.tick_rate == 0) or g.news_rate == 0


def pin(name: str, cpus: list[int], log: logging.Logger) -> list[int]:
    """Pin this process to `cpus` (those this machine has); [] = leave it unpinned."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    usable = [c for c in cpus if c < (os.cpu_count() or 1)]
    missing = sorted(set(cpus) - set(usable))
    if missing:
        log.warning("%s.cpus %s: CPU %s not on this machine; ignored", name, cpus, missing)
    if usable:
        try:
            os.sched_setaffinity(0, usable)
        except OSError as exc:
            log.warning("could not pin %s to CPUs %s: %s", name, usable, exc)
    return sorted(os.sched_getaffinity(0))
