"""Placement alternatives for one checkout, interleaved in one window, every hop and phase.

    python bench/compare_ranks.py [--rounds 3] [--seconds 10] [--variant NAME=KEY=VALUE,...]

Each round runs main.py once per variant (bench_e2e's trading configuration, as
compare_trees.py) and reports p50 / p99 / p99.9 per recorder over each variant's runs, merged.
The default variants rank the OrderManager lowest (the default layout), just below the Strategy,
and above it, plus the warm reference `--layout om-spin-rt`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.compare_trees import run_once  # noqa: E402
from processes.shared import telemetry  # noqa: E402

VARIANTS = {"default": [], "om-below-strategy": ["--set", "order_manager.rt_priority=35"],
            "om-above-strategy": ["--set", "order_manager.rt_priority=45"],
            "om-spin-rt": ["--layout", "om-spin-rt"]}


def merged(snaps: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """(process, recorder) -> percentiles in us over every run, merged."""
    hists: dict[str, list[dict[str, Any]]] = {}
    for snap in snaps:
        for proc, s in snap.items():
            for name, h in s.get("latency", {}).items():
                if h.get("count"):
                    hists.setdefault(f"{proc.partition('.')[0]}.{name}", []).append(h)
    out = {}
    for key, hs in sorted(hists.items()):
        row = telemetry.summarize_merged(hs)
        out[key] = {k: float(v) if k == "count" else v / 1e3 for k, v in row.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    runs: dict[str, list] = {v: [] for v in args.only}
    with tempfile.TemporaryDirectory(prefix="tsranks_") as tmp:
        for k in range(args.rounds):
            for name in args.only:
                work = Path(tmp) / f"{name}{k}"
                work.mkdir()
                runs[name].append(run_once(ROOT, args.seconds, work, tuple(VARIANTS[name])))
                print(f"round {k + 1}/{args.rounds}: {name} done", file=sys.stderr, flush=True)
    print(f"{args.rounds} rounds x {args.seconds:g} s per variant, interleaved; "
          "us (p50 / p99 / p99.9)")
    results = {name: merged(r) for name, r in runs.items()}
    keys = sorted({k for r in results.values() for k in r})
    print(f"{'recorder':<32}" + "".join(f"{n:>26}" for n in args.only))
    for key in keys:
        cells = []
        for name in args.only:
            row = results[name].get(key)
            cells.append(f"{row['p50']:.1f} / {row['p99']:.0f} / {row['p99.9']:.0f}"
                         if row else "-")
        print(f"{key:<32}" + "".join(f"{c:>26}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
