"""The supervisor's stop sequence on a real stack, driven in this process: SIGTERM downstream
first (the Strategy before the OrderManager it sends to), SIGKILL for a child that does not exit,
every exit code reported, and the summary and stop lines of Supervisor.teardown."""

from __future__ import annotations

import logging
import os
import re
import signal
from pathlib import Path

import pytest
from stackutil import make_config, shm_exists, wait_until

from processes.supervisor import stack as stack_mod
from processes.supervisor.stack import Stack, Supervisor

pytestmark = pytest.mark.timeout(90)
STOP_S = 1.0   # the SIGTERM grace (stack.STOP_TIMEOUT) in these tests: a stopped child costs it


def before_own_stop(log_file: Path, line: str) -> bool:
    """Whether `line` is in the log before the process's own 'stopping:' line."""
    text = log_file.read_text()
    own = text.find(" stopping: ")
    assert own >= 0, f"{log_file.name} has no stop line:\n{text[-1500:]}"
    return line in text[:own]


@pytest.fixture(autouse=True)
def _wall_clock_guard(request):
    """Without pytest-timeout (scripts/mutation_report.py turns it off, and mutmut bounds only
    CPU time) a mutant of the stop sequence can wait forever on a child, using no CPU: an alarm
    every few seconds after a minute turns each such wait into a failure, and the fixture's
    cleanup then kills the children."""
    if request.config.pluginmanager.has_plugin("timeout"):
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("the stop sequence hung")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 60, 5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def running(tmp_path, monkeypatch):
    """A whole stack trading in this process's children; stopped (again) at teardown."""
    monkeypatch.setattr(stack_mod, "STOP_TIMEOUT", STOP_S)
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 500, "logging.stats_interval": 0.1})
    stack = Stack(cfg)
    try:
        stack.start()
        wait_until(lambda: (tmp_path / "orders.jsonl").exists()
                   and (tmp_path / "orders.jsonl").read_text().strip(), 20, what="an order")
        yield stack
    finally:
        stack.stop()
        for p in stack.procs.values():
            if p.is_alive():
                p.kill()
                p.join()


def test_stop_goes_downstream_first_and_every_child_exits_cleanly(running, tmp_path):
    codes = running.stop()
    assert codes == {"order_manager": 0, "gateway": 0, "orderbook": 0, "strategy": 0}
    logs = tmp_path / "logs"
    # Downstream first: each upstream process saw its client go while it was still running,
    # and the Strategy never saw its OrderManager go (nor the OrderBook its Gateway).
    assert before_own_stop(logs / "order_manager.log", "gone (closed by peer)")
    assert before_own_stop(logs / "gateway.log", "gone (closed by peer)")
    assert "order manager lost" not in (logs / "strategy.log").read_text()
    assert "price feed lost" not in (logs / "orderbook.log").read_text()
    assert not shm_exists(running.cfg.market.shm_name)
    assert running.stop() == codes    # a second stop is a no-op


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(running, caplog):
    gateway = running.procs["gateway"]
    os.kill(gateway.pid, signal.SIGSTOP)   # a stopped process leaves SIGTERM pending
    with caplog.at_level(logging.WARNING, logger="supervisor"):
        codes = running.stop()
    assert codes["gateway"] == -signal.SIGKILL
    assert {n: c for n, c in codes.items() if n != "gateway"} == {
        "order_manager": 0, "orderbook": 0, "strategy": 0}
    assert f"gateway ignored SIGTERM for {STOP_S:.0f}s; killing it" in caplog.text


def test_teardown_reports_the_exits_and_a_bad_one_makes_exit_code_1(tmp_path, monkeypatch,
                                                                    caplog):
    monkeypatch.setattr(stack_mod, "STOP_TIMEOUT", STOP_S)
    cfg = make_config(tmp_path, **{"gateway.tick_rate": 500, "logging.stats_interval": 0.1})
    # What start() saves and teardown() gives back: pytest's handler, or SIG_IGN when the run
    # was started in the background by a non-interactive shell.
    before = signal.getsignal(signal.SIGINT)
    sup = Supervisor(cfg)
    try:
        sup.start()
        assert signal.getsignal(signal.SIGINT) is not before   # start() installed its own
        wait_until(lambda: len(sup.stack.snapshots()) == 4, 20, what="four stats snapshots")
        os.kill(sup.stack.procs["orderbook"].pid, signal.SIGSTOP)
        sup.stop_reason.append("test")
        with caplog.at_level(logging.INFO):
            code = sup.teardown()
    finally:
        if sup.stack is not None:
            sup.stack.stop()
    assert code == 1
    assert "stopping (test)" in caplog.text
    assert "tradestack summary" in caplog.text
    assert re.search(r"children exited badly: orderbook .*SIGKILL", caplog.text), caplog.text
    stopped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped: ")]
    assert len(stopped) == 1 and "orderbook" in stopped[0]
    assert signal.getsignal(signal.SIGINT) is before   # handlers restored


def test_a_stack_or_supervisor_that_never_started_stops_cleanly(tmp_path, caplog):
    """Start-up can fail before any child exists: stop() and teardown() must still work."""
    cfg = make_config(tmp_path)
    assert Stack(cfg).stop() == {}
    sup = Supervisor(cfg)
    # teardown() ignores Ctrl+C and SIGTERM while it stops; only start() saved handlers to give
    # back, so this test puts pytest's own back itself.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with caplog.at_level(logging.INFO):
            assert sup.teardown() == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert "stopped: none" in caplog.text
    assert "closing the dashboard failed" not in caplog.text     # there is no dashboard


def test_teardown_gives_back_the_wakeup_fd_and_closes_its_sockets(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_mod, "STOP_TIMEOUT", STOP_S)
    sup = Supervisor(make_config(tmp_path))
    sup.start()
    try:
        wake_r, wake_w = sup._wake_r, sup._wake_w
        sup.stop_reason.append("test")
        assert sup.teardown() == 0
    finally:
        if sup.stack is not None:
            sup.stack.stop()
    assert signal.set_wakeup_fd(-1) == -1      # the previous wakeup fd (none) is back
    assert wake_r.fileno() == -1 and wake_w.fileno() == -1
