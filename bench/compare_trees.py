"""Before/after: the same end-to-end run on two checkouts of tradestack, interleaved, one window.

    python bench/compare_trees.py --before /tmp/before [--after .] [--rounds 3] [--seconds 12]
                                  [--json FILE]

A change that touches the hot path (the Strategy host, the OrderBook) is judged against the code
it replaces, measured in the same window: each round runs `main.py` of each tree in turn (ABAB...),
so drift of a shared, noisy machine lands on both sides alike. Each run is the bench_e2e trading
configuration in the default layout; its figures come from the processes' own final stats
snapshots (HdrHistogram buckets, decoded by this tree's processes.shared.telemetry, whose format
both trees share). Reported per hop: p50 / p99 / p99.9 / max over each tree's runs, merged, and
the after/before ratio of each percentile.

`--before` is typically a worktree of the commit before the change:
    git worktree add /tmp/before <commit> && (cd /tmp/before && python setup.py build_ext --inplace)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from processes.shared import telemetry  # noqa: E402

HOPS = ("tick_to_shm", "tick_to_decision", "send_to_order", "om_journaled", "om_ack",
        "order_to_ack", "tick_to_ack")
PERCENTILES = ("p50", "p99", "p99.9", "max")
# bench_e2e's trading configuration: 1,000 ticks/s, fast news, short windows, a zero-width
# sentiment band, so a run books orders often enough for ack percentiles.
TRADING = ("gateway.seed=11",)
PARAMS = {"short_window": 2, "long_window": 4, "bullish": 50, "bearish": 50}


def strategy_params(tree: Path) -> list[str]:
    """The built-in strategy's settings in the tree's own spelling ([strategy.params] or the
    flat [strategy] keys of older trees)."""
    text = (tree / "tradestack.toml").read_text()
    prefix = "strategy.params." if "[strategy.params]" in text else "strategy."
    return [f"{prefix}{k}={v}" for k, v in PARAMS.items()]


def run_once(tree: Path, seconds: float, work: Path, extra: tuple[str, ...] = ()
             ) -> dict[str, dict[str, Any]]:
    """One main.py run of `tree` (with `extra` flags); its processes' final snapshots."""
    logs = work / "logs"
    cmd = [sys.executable, "main.py", "--duration", str(seconds),
           "--price-port", "0", "--news-port", "0", "--order-port", "0",
           "--shm-name", f"tsbench_{uuid.uuid4().hex[:12]}", "--log-dir", str(logs),
           "--order-log", str(work / "orders.jsonl"), "--tick-rate", "1000",
           "--news-rate", "200", "--log-level", "WARNING", *extra]
    for item in (*TRADING, *strategy_params(tree)):
        cmd += ["--set", item]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: main.py exited {done.returncode}:\n{done.stdout[-3000:]}")
    return telemetry.read_all(logs / "stats")


def merged(snaps: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per hop, percentiles (us) over every run's histogram merged into one."""
    out: dict[str, dict[str, float]] = {}
    for hop in HOPS:
        hists = [h for s in snaps for p in s.values()
                 if (h := p.get("latency", {}).get(hop)) and h.get("count")]
        if not hists:
            continue
        row = telemetry.summarize_merged(hists)
        out[hop] = {k: float(v) if k == "count" else v / 1e3 for k, v in row.items()}
    return out


def render(before: dict, after: dict, rounds: int, seconds: float) -> str:
    lines = [f"{rounds} rounds x {seconds:g} s per tree, interleaved (before, after, ...); us",
             f"{'hop':<18} {'tree':<7} {'count':>8} " + " ".join(f"{p:>8}" for p in PERCENTILES)]
    for hop in HOPS:
        if hop not in before or hop not in after:
            continue
        for name, side in (("before", before), ("after", after)):
            row = side[hop]
            lines.append(f"{hop:<18} {name:<7} {row['count']:>8.0f} "
                         + " ".join(f"{row[p]:>8.1f}" for p in PERCENTILES))
        lines.append(f"{hop:<18} {'ratio':<7} {'':>8} "
                     + " ".join(f"{after[hop][p] / before[hop][p]:>8.2f}" for p in PERCENTILES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the checkout to compare to")
    parser.add_argument("--after", type=Path, default=ROOT, help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    runs: dict[str, list] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="tscompare_") as tmp:
        for k in range(args.rounds):
            for name in ("before", "after"):
                work = Path(tmp) / f"{name}{k}"
                work.mkdir()
                runs[name].append(run_once(getattr(args, name).resolve(), args.seconds, work))
                print(f"round {k + 1}/{args.rounds}: {name} done", file=sys.stderr, flush=True)
    before, after = merged(runs["before"]), merged(runs["after"])
    print(render(before, after, args.rounds, args.seconds))
    if args.json is not None:
        args.json.write_text(json.dumps({"before": before, "after": after,
                                         "rounds": args.rounds, "seconds": args.seconds},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
