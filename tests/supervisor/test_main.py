"""The whole stack through main.py: it trades, it stops cleanly, it leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from mainutil import (
    ROOT,
    CollectedRun,
    MainRun,
    assert_nothing_left,
    child_pids,
    main_cmd,
    reap,
    start_main,
)
from stackutil import shm_exists, wait_until

from ext.layout import pid_alive
from processes.shared import telemetry


@pytest.mark.timeout(90)
@pytest.mark.parametrize("impl", ["cython", "python"])
def test_main_duration_trades_and_exits_clean(tmp_path, impl):
    """The whole stack for 4 s, on the compiled price book and on its pure-Python twin."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, TRADESTACK_PURE_PYTHON="1" if impl == "python" else "0")
    proc = subprocess.run(main_cmd(tmp_path, shm, "--duration", "4"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=80)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"'impl': '{impl}'" in out, "the OrderBook must report the implementation it ran"
    assert re.search(r"Received Order \d+: (BUY|SELL) \d+ [A-Z]+ @ \d+\.\d\d", out), out[-3000:]
    orders = [json.loads(x) for x in (tmp_path / "orders.jsonl").read_text().splitlines()]
    assert orders and all(o["client"] == "strat-1" for o in orders)
    assert [o["order_no"] for o in orders] == list(range(1, len(orders) + 1))
    for name in ("main", "gateway", "orderbook", "strategy", "order_manager"):
        assert (tmp_path / "logs" / f"{name}.log").stat().st_size > 0
    # The exit summary: every hop's flow and the latency rows, from the final snapshots.
    assert "tradestack summary" in out, out[-3000:]
    for label in ("OrderBook ticks written to shm", "tick -> decision (Strategy)",
                  "tick -> order received (OrderManager)", "tick -> ack (Strategy)"):
        assert label in out, out[-3000:]
    stats_dir = tmp_path / "logs" / "stats"
    snaps = {p.stem: telemetry.read_snapshot(p) for p in stats_dir.glob("*.json")}
    assert set(snaps) == {"gateway", "orderbook", "strategy", "order_manager"}
    assert all(s["final"] for s in snaps.values())
    assert snaps["strategy"]["latency"]["tick_to_ack"]["count"] == len(orders)
    # Every decision is a sample but those on ticks sent before the Strategy attached.
    counters = snaps["strategy"]["counters"]
    assert snaps["strategy"]["latency"]["tick_to_decision"]["count"] == \
        counters["decisions"] - counters["early_ticks"]
    assert_nothing_left(out, shm)


@pytest.mark.timeout(90)
def test_each_main_run_is_a_new_session_unless_resumed(tmp_path):
    """PnL and positions are one run's: a second main.py starts a new session; --resume goes
    on with the last one (the dashboard's PnL is the OrderManager's, rebuilt per session)."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"

    def run(*extra: str) -> dict:
        """main.py until it has booked an order, then SIGTERM; the OrderManager's counters."""
        had = len(records())
        main = MainRun(tmp_path, shm, *extra)
        try:
            main.wait_for("stack running", 30)
            code = main.stop_when(lambda: len(records()) > had, "an order booked in this run", 30)
        finally:
            main.close()
        assert code == 0, main.output[-3000:]
        snap = telemetry.read_snapshot(tmp_path / "logs" / "stats" / "order_manager.json")
        return snap["counters"]

    def records() -> list[dict]:
        path = tmp_path / "orders.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    first = run()
    n1 = len(records())
    second = run()
    assert first["session"] != second["session"] and second["replayed"] == 0
    assert [r["session"] for r in records()[:n1]] == [first["session"]] * n1
    assert all(r["session"] == second["session"] for r in records()[n1:])
    n2 = len(records()) - n1
    assert second["orders"] == n2 and n1 and n2
    third = run("--resume")
    assert third["session"] == second["session"] and third["replayed"] == n2
    numbers = [r["order_no"] for r in records()]
    assert numbers == list(range(1, len(numbers) + 1))    # unique across sessions
    total = sum(abs(p["position"]) for sym in third["pnl"].values() for p in sym.values())
    assert total <= 5 * 20, "positions of one session only (at most 2 x qty per symbol)"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, False), (signal.SIGINT, False),
                                        (signal.SIGINT, True)],
                         ids=["SIGTERM-main", "SIGINT-main", "Ctrl+C-whole-group"])
def test_signal_to_main_stops_everything(tmp_path, sig, group):
    """`kill <main pid>`, SIGINT to main alone, and a terminal's Ctrl+C (SIGINT to every
    process of the foreground group at once) all stop the stack with exit code 0."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc, lines = start_main(tmp_path, shm)
    try:
        assert shm_exists(shm)
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        rest, _ = proc.communicate(timeout=30)
    finally:
        reap(proc)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    assert_nothing_left(out, shm)


@pytest.mark.timeout(60)
def test_a_crashed_child_stops_the_stack_and_its_segment_is_removed(tmp_path):
    """With supervisor.restart off, a dead child stops the whole stack (restarts: test_faults)."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc, lines = start_main(tmp_path, shm, "--set", "supervisor.restart=false")
    try:
        os.kill(child_pids("".join(lines))["orderbook"], signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        reap(proc)
    out = "".join(lines) + rest
    assert proc.returncode == 1
    assert "orderbook died (killed by SIGKILL)" in out
    # The exit lines say how each child stopped, in words.
    assert re.search(r"children exited badly: orderbook killed by SIGKILL$", out, re.M), out
    assert re.search(r"stopped: order_manager exit 0, gateway exit 0, orderbook killed by "
                     r"SIGKILL, strategy exit 0$", out, re.M), out[-2000:]
    assert_nothing_left(out, shm)


@pytest.mark.timeout(60)
def test_children_exit_when_main_is_killed(tmp_path):
    """SIGKILL main.py: it runs no cleanup, so the children must notice (PR_SET_PDEATHSIG)
    and exit by themselves, the OrderBook unlinking its segment on the way out."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc, lines = start_main(tmp_path, shm)
    try:
        pids = child_pids("".join(lines))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 10,
                   what="orphaned children to exit")
        wait_until(lambda: not shm_exists(shm), 5, what="segment to be unlinked")
    finally:
        for pid in child_pids("".join(lines)).values():  # never leave strays, even on failure
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(60)
def test_a_second_stack_fails_without_touching_the_first(tmp_path):
    """Same segment name twice (e.g. `python main.py` run twice): the second stack fails with a
    clear error and must not delete the first stack's live segment."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    first, lines = start_main(tmp_path / "a", shm)
    try:
        second = subprocess.run(main_cmd(tmp_path / "b", shm), cwd=tmp_path, text=True,
                                capture_output=True, timeout=40)
        out = second.stdout + second.stderr
        assert second.returncode == 1, out[-2000:]
        assert "orderbook failed to start" in out and "FileExistsError" in out, out[-2000:]
        assert shm_exists(shm), "the failed stack deleted the running stack's segment"
        assert first.poll() is None, "the first stack must keep running"
        os.kill(first.pid, signal.SIGTERM)
        rest, _ = first.communicate(timeout=30)
    finally:
        reap(first)
    assert first.returncode == 0
    assert_nothing_left("".join(lines) + rest, shm)


@pytest.mark.timeout(60)
def test_ctrl_c_during_start_up_stops_at_once(tmp_path):
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen(main_cmd(tmp_path, shm), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        while True:  # first child ready: the stack is mid start-up
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "order_manager ready" in line:
                break
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        reap(proc)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    assert took < 10, f"stop during start-up took {took:.1f}s"
    pids = child_pids(out)
    wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 5, what="children")
    assert not shm_exists(shm)


@pytest.mark.timeout(30)
def test_print_config_and_bad_flags(tmp_path):
    ok = subprocess.run([sys.executable, str(ROOT / "main.py"), "--print-config",
                         "--tick-rate", "5"], capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0 and "tick_rate = 5.0" in ok.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "main.py"), "--set", "gateway.nope=1"],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode == 2 and "gateway.nope" in bad.stderr
    for module in ("gateway", "orderbook", "strategy", "order_manager"):
        helped = subprocess.run([sys.executable, "-m", f"processes.{module}", "--help"],
                                capture_output=True, text=True, timeout=20, cwd=ROOT)
        assert helped.returncode == 0 and "--config" in helped.stdout, module


@pytest.mark.timeout(60)
def test_print_config_into_a_closed_pipe_and_a_missing_config_file(tmp_path):
    head = subprocess.run(f"{sys.executable} main.py --print-config | head -1", shell=True,
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert head.stdout == "[network]\n"
    assert "BrokenPipeError" not in head.stderr and "Traceback" not in head.stderr, head.stderr
    missing = subprocess.run([sys.executable, "main.py", "--config", str(tmp_path / "x.toml")],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].endswith("x.toml: no such file")
    assert "Traceback" not in missing.stderr


def _stamp_s(line: str) -> float:
    """Seconds since midnight of a log line's HH:MM:SS.mmm stamp."""
    h, m, s = line.split(" ", 1)[0].split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _line_index(lines: list[str], pattern: str) -> int:
    hits = [i for i, line in enumerate(lines) if re.search(pattern, line)]
    assert len(hits) == 1, (pattern, hits, "".join(lines[-60:]))
    return hits[0]


@pytest.mark.timeout(90)
def test_sigterm_to_main_stops_downstream_first_and_prints_the_summary(tmp_path):
    """`kill <main pid>` is an orderly stop, not just a quick one: main.py says why it stops,
    SIGTERMs the children downstream first (each one's final stats snapshot, written on its
    way out, is later than the one stopped before it), prints the exit summary from those
    snapshots, then one line of how each child stopped. A main.py that died at once would
    leave the children to PR_SET_PDEATHSIG: none of that would be printed."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc, lines = start_main(tmp_path, shm, "--set", "logging.stats_interval=0.1")
    try:
        pids = child_pids("".join(lines))
        stats = tmp_path / "logs" / "stats"
        wait_until(lambda: all((stats / f"{n}.json").exists() for n in pids), 20,
                   what="every child's first snapshot")
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=40)
    finally:
        reap(proc)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    tail = rest.splitlines(keepends=True)
    stopping = _line_index(tail, r" main +INFO +stopping \(SIGTERM\)$")
    summary_at = _line_index(tail, r"tradestack summary")
    stopped = _line_index(tail, r" main +INFO +stopped: ")
    assert stopping < summary_at < stopped, "".join(tail)
    assert tail[stopped].rstrip().endswith(
        "stopped: order_manager exit 0, gateway exit 0, orderbook exit 0, strategy exit 0"), tail
    snaps = {n: telemetry.read_snapshot(stats / f"{n}.json") for n in pids}
    assert all(s["final"] and s["pid"] == pids[n] for n, s in snaps.items()), snaps
    stop_order = sorted(snaps, key=lambda n: snaps[n]["mono_ns"])
    assert stop_order == ["strategy", "orderbook", "gateway", "order_manager"], (
        "children must stop downstream first", stop_order)
    for name in pids:
        own_log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert re.search(r" INFO +stopping: ", own_log), name
    assert_nothing_left(out, shm)


@pytest.mark.timeout(90)
def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    """A child that does not act on SIGTERM (here SIGSTOPped, so the signal stays pending)
    gets STOP_TIMEOUT seconds, then SIGKILL; the others still stop, the crashed OrderBook's
    segment is removed, and main.py exits 1 naming the child it had to kill."""
    from processes.supervisor.stack import STOP_TIMEOUT
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    proc, lines = start_main(tmp_path, shm)
    try:
        pids = child_pids("".join(lines))
        os.kill(pids["orderbook"], signal.SIGSTOP)
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        reap(proc)
        for pid in child_pids("".join(lines)).values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    out = "".join(lines) + rest
    assert proc.returncode == 1, out[-3000:]
    tail = rest.splitlines(keepends=True)
    stopping = _line_index(tail, r" main +INFO +stopping \(SIGTERM\)$")
    killing = _line_index(tail, rf"orderbook ignored SIGTERM for {STOP_TIMEOUT:.0f}s; killing it$")
    # The grace period is a lower bound (no upper one: that would be a timing assert).
    assert _stamp_s(tail[killing]) - _stamp_s(tail[stopping]) >= STOP_TIMEOUT - 0.002, tail
    assert re.search(r"children exited badly: orderbook killed by SIGKILL$", rest, re.M), rest
    assert re.search(r"stopped: order_manager exit 0, gateway exit 0, orderbook killed by "
                     r"SIGKILL, strategy exit 0$", rest, re.M), rest[-2000:]
    assert re.search(r"removed segment /dev/shm/\S+ left by a crashed OrderBook", rest), rest
    assert_nothing_left(out, shm)


@pytest.mark.timeout(90)
def test_without_realtime_privilege_the_default_layout_runs_with_a_warning(tmp_path):
    """The default layout asks for SCHED_FIFO; a user without CAP_SYS_NICE gets normal
    scheduling, a warning naming each priority not applied, and a stack that trades."""
    cmd = main_cmd(tmp_path, f"tstest_{uuid.uuid4().hex[:12]}")
    if os.geteuid() == 0:       # root holds CAP_SYS_NICE: drop it for main.py and its children
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is not installed: root cannot drop CAP_SYS_NICE")
        cmd = [setpriv, "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", *cmd]
    orders = tmp_path / "orders.jsonl"
    run = CollectedRun(cmd, tmp_path)
    try:
        code = run.stop_when(lambda: orders.exists() and orders.read_text().strip(),
                             "an order booked without real-time priority")
    finally:
        run.close()
    out = run.output
    assert code == 0, out[-3000:]
    logs = {name: (tmp_path / "logs" / f"{name}.log").read_text()
            for name in ("gateway", "orderbook", "strategy", "order_manager")}
    for name, priority in (("gateway", 20), ("orderbook", 30), ("strategy", 40),
                           ("order_manager", 35)):
        assert f"{name}.rt_priority {priority} not applied" in logs[name], logs[name][-2000:]
    assert (tmp_path / "orders.jsonl").read_text().strip(), "the stack must still trade"
    assert_nothing_left(out, cmd[cmd.index("--shm-name") + 1])
