"""The README stays true: its generated table matches the code, and the commands it documents run
as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _command(prefix: str) -> list[str]:
    """The README's first command line that starts with `prefix`, as argv."""
    for line in README.splitlines():
        if line.startswith(prefix):
            return shlex.split(line.split("  #", 1)[0])
    raise AssertionError(f"README has no command starting with {prefix!r}")


@pytest.mark.timeout(60)
def test_the_config_reference_table_is_the_generated_one():
    generated = subprocess.run([sys.executable, "scripts/config_reference.py"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    assert generated in README, "README's config table is stale: paste " \
                                "`python scripts/config_reference.py` over it"


@pytest.mark.timeout(120)
def test_the_documented_backtest_command_trades_the_example():
    argv = _command("python -m processes.strategy.backtest")
    assert "strategy.class=examples.sentiment:SentimentOnly" in argv
    done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    orders = re.findall(r"^Order (\d+): (BUY|SELL) (\d+) (\w+) @ [\d.]+$", done.stdout, re.M)
    assert orders and [int(o[0]) for o in orders] == list(range(1, len(orders) + 1))
    assert "PnL: realized " in done.stdout


@pytest.mark.timeout(60)
def test_the_documented_gateway_flags_parse():
    """`python -m processes.gateway --tick-rate 0 --plain` as the README spells it (with
    --print-config, so it stops after parsing)."""
    match = re.search(r"`(python -m processes\.gateway [^`]*--plain)`", README)
    assert match, "README no longer shows the gateway flag example"
    argv = shlex.split(match[1]) + ["--print-config"]
    done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert "tick_rate = 0.0" in done.stdout and "plain = true" in done.stdout


@pytest.mark.timeout(60)
def test_the_documented_mutation_command_names_real_targets():
    """`python scripts/mutation_report.py` as documented, with --list: every target pattern
    matches a function and the verdicts file parses (the run itself is on demand)."""
    argv = _command("python scripts/mutation_report.py")
    done = subprocess.run([sys.executable, *argv[1:], "--list"], cwd=ROOT, capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    for module in ("processes/shared/protocol.py", "processes/order_manager/service.py",
                   "processes/strategy/host.py", "processes/supervisor/stack.py"):
        assert module in done.stdout
    assert "OrderManager._on_order" in done.stdout and "Stack.stop" in done.stdout
    assert re.search(r"\d+ mutant globs, \d+ verdicts", done.stdout), done.stdout


@pytest.mark.timeout(30)
def test_the_headline_figure_is_the_reports():
    """The README's headline block is what bench/report.py generated (bench/results/headline.md),
    never a sentence typed by hand."""
    generated = (ROOT / "bench" / "results" / "headline.md").read_text()
    start = README.index("<!-- headline:")
    block = README[README.index("\n", start) + 1:README.index("<!-- /headline -->")]
    assert block == generated
