"""Break one feature at a time in a copy of the tree and run the test that claims it.

    python scripts/sabotage_check.py            # every sabotage; exit 1 if a test missed one
    python scripts/sabotage_check.py --list     # what each one changes, and its tests
    python scripts/sabotage_check.py --only reject-keeps-position

Each sabotage is a one-line change a reviewer would try (issue 14's table): the test named for
the feature must fail under it. The copy is made once (the built extensions included), each
change applied and undone in turn, so the checkout itself is never touched. A sabotage whose
line is no longer in the source is an error, not a pass: the list follows the code.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sabotage:
    name: str
    feature: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


SABOTAGES = (
    Sabotage("forget-booked-ids", "the OrderManager remembers booked ids after a restart",
             "processes/order_manager/service.py",
             'self.booked[key] = rec["order_no"]', "pass",
             ("tests/order_manager/test_faults_orders.py",)),
    Sabotage("sigterm-exits-at-once", "main.py stops in order on SIGTERM",
             "processes/supervisor/stack.py",
             "self.stop_reason.append(signal.Signals(signum).name)", "os._exit(0)",
             ("tests/supervisor/test_main.py::"
              "test_sigterm_to_main_stops_downstream_first_and_prints_the_summary",)),
    Sabotage("stop-upstream-first", "the stack stops downstream first",
             "processes/supervisor/stack.py",
             "for name in reversed(self.order):", "for name in self.order:",
             ("tests/supervisor/test_main.py::"
              "test_sigterm_to_main_stops_downstream_first_and_prints_the_summary",)),
    Sabotage("sentiment-at-threshold", "sentiment must be strictly past its threshold",
             "processes/strategy/signals.py",
             "if sentiment > bullish:", "if sentiment >= bullish:",
             ("tests/stack/test_processes.py::"
              "test_strategy_process_trades_only_strictly_past_each_threshold",)),
    Sabotage("averages-equal", "the moving averages must differ strictly",
             "processes/strategy/signals.py",
             "return BUY if lhs > rhs else", "return BUY if lhs >= rhs else",
             ("tests/stack/test_processes.py::"
              "test_strategy_process_trades_only_strictly_past_each_threshold",)),
    Sabotage("order-fast-path-off", "orders take the typed fast path",
             "processes/shared/protocol.py",
             "order = _decode_order(frame)", "order = None",
             ("tests/shared/test_properties.py::"
              "test_an_encoded_order_is_decoded_by_the_typed_path_alone",)),
    Sabotage("hello-fast-path-off", "hellos take the typed fast path",
             "processes/shared/protocol.py",
             "hello = _decode_hello(frame)", "hello = None",
             ("tests/shared/test_properties.py::"
              "test_an_encoded_hello_is_decoded_by_the_typed_path_alone",)),
    Sabotage("reject-keeps-position", "a reject restores the Strategy's position",
             "processes/strategy/host.py",
             "self.positions[j] -= sign * order.qty", "pass",
             ("tests/stack/test_order_replies.py::"
              "test_a_risk_reject_from_the_order_manager_restores_the_strategys_position",)),
)


def check_applies(s: Sabotage, root: Path = ROOT) -> str | None:
    """Why `s` cannot be applied to the tree at `root`, or None."""
    count = (root / s.path).read_text().count(s.old)
    return None if count == 1 else f"{s.path}: {s.old!r} occurs {count} times, not once"


def _pytest(tests: tuple[str, ...], copy: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "--benchmark-disable",
                           "-p", "no:cacheprovider", *tests], cwd=copy, capture_output=True,
                          text=True, timeout=timeout)


def run_one(s: Sabotage, copy: Path, timeout: float) -> tuple[str, float]:
    """Apply `s` in `copy`, run its tests, undo it: ("caught" | "MISSED" | "error: ...", s)."""
    target = copy / s.path
    original = target.read_text()
    target.write_text(original.replace(s.old, s.new, 1))
    t0 = time.monotonic()
    try:
        done = _pytest(s.tests, copy, timeout)
    except subprocess.TimeoutExpired:
        return "error: the tests timed out", time.monotonic() - t0
    finally:
        target.write_text(original)
    took = time.monotonic() - t0
    if done.returncode == 1:    # tests ran, and at least one failed: the sabotage was seen
        return "caught", took
    if done.returncode == 0:
        return "MISSED", took
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
    return f"error: pytest exit {done.returncode} {tail}", took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the sabotages; run nothing")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run just this sabotage (repeatable)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per sabotage's tests")
    args = ap.parse_args(argv)
    chosen = [s for s in SABOTAGES if not args.only or s.name in args.only]
    unknown = set(args.only) - {s.name for s in SABOTAGES}
    if unknown:
        ap.error(f"no sabotage named {', '.join(sorted(unknown))}")
    problems = [p for s in chosen if (p := check_applies(s))]
    if args.list:
        for s in chosen:
            print(f"{s.name}: {s.feature}\n  {s.path}: {s.old!r} -> {s.new!r}\n"
                  f"  tests: {' '.join(s.tests)}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if args.list:
        return 0
    print("| sabotage | feature | result | s |\n|---|---|---|---:|")
    missed = 0
    with tempfile.TemporaryDirectory(prefix="tssabotage_") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
            ".git", ".venv", "mutants", "logs", "build", "__pycache__", "bench_results"))
        # The control: unsabotaged, the same tests pass in the copy, so a failure under a
        # sabotage is the sabotage's doing.
        tests = tuple(dict.fromkeys(t for s in chosen for t in s.tests))
        control = _pytest(tests, copy, args.timeout * len(chosen))
        if control.returncode != 0:
            print(control.stdout[-3000:] + control.stderr[-2000:])
            print("the tests fail without any sabotage: nothing can be judged", file=sys.stderr)
            return 1
        for s in chosen:
            result, took = run_one(s, copy, args.timeout)
            missed += result != "caught"
            print(f"| `{s.name}` | {s.feature} | {result} | {took:.0f} |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
