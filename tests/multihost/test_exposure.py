"""Listening beyond loopback: the warnings, the refusal without a token, and what each role runs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from mainutil import ROOT
from stackutil import Child, make_config

from processes.shared import exposure
from processes.shared.config import ConfigError
from processes.supervisor.stack import process_order, role_problem

pytestmark = pytest.mark.timeout(60)

EXPOSED = "198.18.0.1"   # benchmarking range: never bound here, the checks refuse first


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("198.18.0.1", False), ("::", False), ("core.example", False),
])
def test_what_counts_as_loopback(address, loopback):
    assert exposure.is_loopback(address) is loopback


def test_loopback_listens_say_nothing(tmp_path, caplog):
    cfg = make_config(tmp_path)
    with caplog.at_level(logging.WARNING):
        exposure.check_gateway(cfg, logging.getLogger("t"))
        exposure.check_order_manager(cfg, logging.getLogger("t"))
    assert not caplog.records


def test_an_exposed_feed_warns_that_it_is_unauthenticated(tmp_path, caplog):
    cfg = make_config(tmp_path, **{"gateway.listen": EXPOSED})
    with caplog.at_level(logging.WARNING):
        exposure.check_gateway(cfg, logging.getLogger("t"))
    assert "unauthenticated" in caplog.text and EXPOSED in caplog.text


def test_an_exposed_order_port_without_a_token_refuses(tmp_path, monkeypatch):
    monkeypatch.delenv("TRADESTACK_TOKEN", raising=False)
    cfg = make_config(tmp_path, **{"order_manager.listen": EXPOSED})
    with pytest.raises(ConfigError, match="no token is set.*allow_no_token"):
        exposure.check_order_manager(cfg, logging.getLogger("t"))


@pytest.mark.parametrize("how", ["config", "environment"])
def test_an_exposed_order_port_with_a_token_warns(tmp_path, monkeypatch, caplog, how):
    monkeypatch.delenv("TRADESTACK_TOKEN", raising=False)
    overrides = {"order_manager.listen": EXPOSED}
    if how == "config":
        overrides["order_manager.token"] = "s3cret"
    else:
        monkeypatch.setenv("TRADESTACK_TOKEN", "s3cret")
    cfg = make_config(tmp_path, **overrides)
    with caplog.at_level(logging.WARNING):
        exposure.check_order_manager(cfg, logging.getLogger("t"))
    assert "unauthenticated" in caplog.text and "token" in caplog.text
    assert "s3cret" not in caplog.text


def test_allow_no_token_starts_with_a_louder_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("TRADESTACK_TOKEN", raising=False)
    cfg = make_config(tmp_path, **{"order_manager.listen": EXPOSED,
                                   "order_manager.allow_no_token": True})
    with caplog.at_level(logging.WARNING):
        exposure.check_order_manager(cfg, logging.getLogger("t"))
    assert "NO token is required" in caplog.text


def test_the_order_manager_process_refuses_before_binding(tmp_path, monkeypatch):
    """A real OrderManager reports the refusal as its start-up error (main.py prints it),
    before it has opened (or made) its order log and journal."""
    monkeypatch.delenv("TRADESTACK_TOKEN", raising=False)
    cfg = make_config(tmp_path, **{"order_manager.listen": EXPOSED})
    child = Child("order_manager", cfg)
    try:
        with pytest.raises(RuntimeError, match="not loopback and no token is set"):
            child.start()
    finally:
        child.stop()
    log_path = Path(cfg.order_manager.order_log)
    assert not log_path.exists() and not log_path.with_name(log_path.name + ".journal").exists()


def test_roles_split_the_processes(tmp_path):
    cfg = make_config(tmp_path, **{"strategies.second.symbols": ["AAPL"]})
    assert process_order(cfg, "core") == ("order_manager", "gateway")
    assert process_order(cfg, "trading") == ("orderbook", "strategy", "strategy.second")
    assert process_order(cfg, "all") == process_order(cfg)
    assert "network.price_port" in role_problem(cfg, "trading")   # ports 0: unknowable remotely
    assert role_problem(cfg, "core") is None


def test_main_refuses_a_trading_host_without_the_cores_ports():
    done = subprocess.run([sys.executable, "main.py", "--role", "trading", "--order-port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 2
    assert "network.order_port must be the port the core listens on" in done.stderr
