"""main.py's restart policy, pure: backoff per child, the max_restarts limit, restarts off."""

from __future__ import annotations

import pytest

from processes.shared.config import Supervisor
from processes.supervisor.stack import ORDER, describe_exit, describe_exits
from processes.supervisor.supervision import STABLE_AFTER, RestartPolicy

pytestmark = pytest.mark.timeout(10)


def policy(**kw) -> RestartPolicy:
    return RestartPolicy(Supervisor(**kw), ORDER, rng=lambda: 1.0)   # jitter at its largest


def test_backoff_doubles_per_child_with_jitter_and_is_capped():
    p = policy(backoff=0.5, backoff_max=2.0, max_restarts=0)
    delays = [p.died("gateway", 0.0) for _ in range(5)]
    assert delays == [0.25, 0.5, 1.0, 1.0, 1.0]     # base 0.5, 1, 2, 2, 2; jitter halves at most
    assert p.died("orderbook", 0.0) == 0.25          # its own backoff


def test_due_children_come_back_in_start_up_order():
    p = policy(backoff=1.0)
    p.died("strategy", 0.0)
    p.died("order_manager", 0.0)
    assert p.next_due() == 0.5 and p.due(0.4) == []
    assert p.due(0.5) == ["order_manager", "strategy"] and p.next_due() is None
    assert p.total == 2


def test_max_restarts_in_a_row_then_give_up_unless_the_child_was_stable():
    p = policy(max_restarts=2)
    assert p.died("gateway", 0.0) is not None and p.due(10.0) == ["gateway"]
    assert p.died("gateway", 11.0) is not None and p.due(20.0) == ["gateway"]
    assert p.died("gateway", 21.0) is None           # a third death in a row: stop the stack
    p = policy(max_restarts=1)
    assert p.died("gateway", 0.0) is not None and p.due(1.0) == ["gateway"]
    assert p.died("gateway", 1.0 + STABLE_AFTER) == 0.25   # ran long enough: counts afresh


def test_restart_off_never_restarts():
    assert policy(restart=False).died("orderbook", 0.0) is None


def test_exit_codes_are_named_in_words():
    assert [describe_exit(c) for c in (0, 1, -15, -2, -9, -11, None)] == [
        "exit 0", "exit 1", "stopped by SIGTERM", "stopped by SIGINT", "killed by SIGKILL",
        "killed by SIGSEGV", "still running"]
    assert describe_exits({"gateway": 0, "strategy": -15}) == \
        "gateway exit 0, strategy stopped by SIGTERM"


def test_a_death_soon_after_a_late_restart_still_counts():
    """Stable means running STABLE_AFTER since the last restart, however late in the run."""
    p = policy(max_restarts=1)
    assert p.died("gateway", 0.0) is not None and p.due(100.0) == ["gateway"]
    assert p.died("gateway", 101.0) is None


def test_pending_and_due_follow_start_up_order_not_names():
    p = policy(backoff=1.0)
    for name in ("orderbook", "gateway", "order_manager"):   # ORDER: order_manager, gateway, ...
        p.died(name, 0.0)
    assert p.pending() == ["order_manager", "gateway", "orderbook"]
    assert p.due(1.0) == ["order_manager", "gateway", "orderbook"]


def test_unknown_signals_and_no_children_are_named_too():
    assert describe_exit(-99) == "killed by signal 99"
    assert describe_exits({}) == "none"


def test_the_configured_backoff_cap_is_the_one_applied():
    p = policy(backoff=1.0, backoff_max=8.0, max_restarts=0)
    assert [p.died("gateway", 0.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
