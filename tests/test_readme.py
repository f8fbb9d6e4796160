"""The README stays true: its generated table matches the code, and the commands it documents run
as written."""

from __future__ import annotations

import os
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


def _toml_block(first_line: str) -> str:
    """The README's ```toml block whose first line is `first_line`."""
    for block in re.findall(r"```toml\n(.*?)```", README, re.S):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"README has no toml block starting with {first_line!r}")


def _print_config(argv: list[str]) -> str:
    done = subprocess.run([sys.executable, *argv[1:], "--print-config"], cwd=ROOT,
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(120)
def test_the_documented_host_commands_and_their_toml_configure_each_role(tmp_path):
    """The "More than one host" commands set what the section says, and each host's TOML
    block is the same configuration as its command line."""
    core = _command("python main.py --role core")
    trading = _command("python main.py --role trading")
    core_cfg = _print_config(core)
    assert core_cfg.count('listen = "198.18.0.1"') == 2   # [gateway] and [order_manager]
    trading_cfg = _print_config(trading)
    for line in ('gateway_host = "198.18.0.1"', 'order_host = "198.18.0.1"',
                 'shm_name = "tradestack_desk_a"', 'name = "desk-a"'):
        assert line in trading_cfg
    assert "max_price_age = 0.0" not in trading_cfg   # the age check stays on across hosts
    for block, argv in (("# core.toml", core), ("# desk_a.toml", trading)):
        path = tmp_path / block[2:]
        path.write_text(_toml_block(block))
        role = argv[argv.index("--role"):argv.index("--role") + 2]
        assert _print_config(["python", "main.py", *role, "--config", str(path)]) == \
            _print_config(argv)


@pytest.mark.timeout(90)
def test_the_documented_core_and_trading_host_connect_across_namespaces(tmp_path):
    """The core and trading-host commands as written, in two network namespaces where
    198.18.0.1 is the core (the test's only change: a segment name of its own)."""
    from netnsutil import HostRun, Lan, unavailable

    why = unavailable()
    if why is not None:
        pytest.skip(why)
    core, trading = (_command(f"python main.py --role {r}") for r in ("core", "trading"))
    lan = Lan("rd", hosts=1)
    assert lan.core_addr == "198.18.0.1"
    segment = f"ts_readme_{os.getpid()}"
    env = {"TRADESTACK_TOKEN": "readme-test-token"}
    runs: list[HostRun] = []
    try:
        lan.build()
        runs.append(HostRun(lan.core, tmp_path / "core", core[2:], env=env))
        runs[0].wait_for("stack running")
        runs.append(HostRun(lan.hosts[0], tmp_path / "desk_a",
                            [*trading[2:], "--shm-name", segment], env=env))
        runs[1].wait_for("welcomed by order manager", 30)
        runs[1].wait_for("connected to price feed 198.18.0.1:5001")
        runs[1].wait_for("connected to news 198.18.0.1:5002")
        assert "is desk-a" in (tmp_path / "core" / "logs" / "order_manager.log").read_text()
        assert [run.stop() for run in reversed(runs)] == [0, 0]
        assert not os.path.exists(f"/dev/shm/{segment}")
    finally:
        for run in runs:
            run.kill()
        lan.close()
        Path(f"/dev/shm/{segment}").unlink(missing_ok=True)
