"""The dashboard: pure rendering from synthetic snapshots, and real terminals under tmux.

The tmux tests run a real stack (main.py --dashboard, or main.py plus the standalone monitor) on
ephemeral ports in a private tmux server (`tmux -L <unique>`), read the screen with capture-pane,
and quit with `q` or Ctrl+C. The pane's shell then prints the exit code and whether the terminal
settings (stty -g) are what they were before, so "terminal restored" is checked, not assumed.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from stackutil import shm_exists, wait_until

from ext.layout import pid_alive, segment_owner
from processes.shared import telemetry
from processes.tools import dashboard
from processes.tools.dashboard import Quote

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0


def text_of(renderable, width: int = 200) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def latency(values_ns: list[int]) -> dict:
    rec = telemetry.Recorder("x")
    rec.extend(np.array(values_ns, dtype=np.int64))
    return rec.snapshot()


def snap(process: str, counters: dict, age: float = 0.2, pid: int = 1000, rates=None,
         latency_: dict | None = None, final: bool = False) -> dict:
    return {"process": process, "pid": pid, "time": NOW - age, "mono_ns": 0, "started_ns": 0,
            "started_at": NOW - 60, "uptime_s": 60.0, "final": final, "counters": counters,
            "rates": rates or {}, "latency": latency_ or {}}


def synthetic(pnl: bool = True) -> dict[str, dict]:
    decision = [50_000] * 900 + [2_000_000] * 100
    om = {"orders": 12, "rejects": 1, "clients": 1, "kill_switch": True, "duplicates": 2}
    if pnl:
        om["pnl"] = {"strat-1": {"AAPL": {"position": 10, "avg_price": 187.25,
                                          "realized": 12.5, "unrealized": -3.75}}}
        om["pnl_totals"] = {"realized": 12.5, "unrealized": -3.75, "total": 8.75}
    return {
        "gateway": snap("gateway", {"ticks": 5000, "deliveries": 5000, "dropped_batches": 0},
                        pid=1001, rates={"ticks": 1000.0}),
        "orderbook": snap("orderbook", {"ticks": 4990, "gaps": 3, "reconnects": 2},
                          pid=1002, rates={"ticks": 998.0}),
        "strategy": snap("strategy", {"ticks": 4980, "decisions": 4980, "orders": 13,
                                      "acks": 12, "rejects": 1, "reconnects": 0,
                                      "stale_symbols": 1, "stale_skips": 4,
                                      "symbols": ["AAPL", "MSFT"], "positions": [10, -10],
                                      "sentiment": [71, None]},
                         pid=1003, rates={"ticks": 997.0},
                         latency_={"tick_to_decision": latency(decision),
                                   "tick_to_ack": latency([400_000] * 10)}),
        # Last published 10 s ago with a 1 s interval: hung.
        "order_manager": snap("order_manager", om, age=10.0, pid=1004),
    }


PRICES = {"AAPL": Quote(187.39, 1234, 5_000_000_000), "MSFT": Quote(float("nan"))}


# --- pure rendering ------------------------------------------------------------------------------

@pytest.mark.timeout(20)
def test_every_strategy_process_has_a_positions_column_and_a_row():
    snaps = synthetic()
    snaps["strategy"]["counters"].update(name="strat-1", refused=3,
                                         **{"class": "processes.strategy.builtin:X"})
    snaps["strategy.news"] = snap("strategy.news", {
        "name": "news", "class": "examples.sentiment:SentimentOnly", "orders": 7, "acks": 5,
        "rejects": 2, "refused": 9, "backoffs": 2, "strategy_errors": 0, "held": 1,
        "symbols": ["AAPL"], "positions": [-20], "sentiment": [5], "unsent": 4}, pid=1005)
    out = text_of(dashboard.render(snaps, PRICES, now=NOW, stats_interval=1.0))
    aapl = next(line for line in out.splitlines() if re.search(r"\bAAPL\b.*187\.39", line))
    assert "LONG +10" in aapl and "SHORT -20" in aapl
    row = next(line for line in out.splitlines() if "examples.sentiment:SentimentOnly" in line)
    assert re.search(r"news +examples\.sentiment:SentimentOnly +7 +5 +2 +9 +2 +0 +1", row), row
    assert re.search(r"strat-1 +processes\.strategy\.builtin:X +13 +12 +1 +3", out)
    assert re.search(r"news unsent +4", out) and re.search(r"news refused +9", out)
    assert re.search(r"strategy\.news +1,?005", out), "its own health row"

@pytest.mark.timeout(20)
def test_render_shows_prices_positions_latency_pnl_and_health():
    snaps = synthetic()
    out = text_of(dashboard.render(snaps, PRICES, now=NOW, mono_ns=5_002_000_000,
                                   stats_interval=1.0, alive=lambda pid: pid != 1002,
                                   prev_prices={"AAPL": Quote(187.00, 1233, 1)}))
    aapl = next(line for line in out.splitlines() if re.search(r"\bAAPL\b.*187\.39", line))
    assert "▲0.39" in aapl and "1,234" in aapl and "2ms" in aapl and "71" in aapl
    assert "LONG" in aapl
    msft = next(line for line in out.splitlines() if re.search(r"^\W*MSFT\b", line.strip("│ ")))
    assert "SHORT" in msft and "—" in msft        # never-written slot: no price, still a row
    # p50/p99 from the histogram pairs, as telemetry.summarize computes them.
    expected = telemetry.summarize(snaps["strategy"]["latency"]["tick_to_decision"]["pairs"])
    row = next(line for line in out.splitlines() if "tick -> decision" in line)
    assert dashboard._us(expected["p50"]) in row and dashboard._us(expected["p99"]) in row
    assert expected["p50"] < 60_000 and expected["p99"] > 1_900_000
    assert "1,000" in row                          # count
    # Health: the OrderManager's snapshot is 10 intervals old, the OrderBook's pid is gone.
    states = {m[1]: m[2] for m in re.finditer(r"(gateway|orderbook|strategy|order_manager)"
                                              r"\s+\d+\s+(\w+)", out)}
    assert states == {"gateway": "ok", "orderbook": "dead", "strategy": "ok",
                      "order_manager": "stale"}
    # PnL, orders, problems.
    pnl_row = next(line for line in out.splitlines() if "strat-1" in line and "187.25" in line)
    assert "+12.50" in pnl_row and "-3.75" in pnl_row
    assert "+8.75" in out
    assert re.search(r"gaps\s+3", out) and re.search(r"book reconnects\s+2", out)
    assert re.search(r"stale symbols\s+1", out) and re.search(r"stale skips\s+4", out)
    assert re.search(r"kill switch\s+ON", out) and re.search(r"resent dups\s+2", out)
    assert re.search(r"Gateway ticks generated\s+1,000\s+5,000", out)


@pytest.mark.timeout(20)
def test_slow_rates_keep_a_decimal_and_few_samples_are_no_percentiles():
    snaps = synthetic()
    om = snaps["order_manager"]
    om["rates"] = {"orders": 0.5, "rejects": 0.0}
    snaps["strategy"]["rates"].update(orders=12.4)
    snaps["strategy"]["latency"]["tick_to_ack"] = latency([400_000])        # one sample
    out = text_of(dashboard.render(snaps, PRICES, now=NOW, stats_interval=1.0))
    assert re.search(r"order_manager orders +12 +0\.5\b", out), out
    assert re.search(r"order_manager rejects +1 +0\b", out), out
    assert re.search(r"strategy orders +13 +12\b", out), out
    ack = next(line for line in out.splitlines() if "tick -> ack" in line)
    # p50 = p99 of one sample is no distribution: hidden, the count says why.
    assert re.search(r"tick -> ack \(Strategy\) +— +— +— +— +1\b", ack), ack
    decision = next(line for line in out.splitlines() if "tick -> decision" in line)
    assert not re.search(r"tick -> decision \(Strategy\) +—", decision), decision
    assert f"fewer than {dashboard.MIN_PERCENTILE_SAMPLES} samples" in out


@pytest.mark.timeout(20)
def test_the_header_waits_for_the_first_stats_without_an_exception_name():
    from processes.tools.monitor import Monitor

    mon = Monitor(f"tstest_{uuid.uuid4().hex[:12]}", lambda: {}, label="stats: x")
    try:
        out = text_of(mon.frame())
    finally:
        mon.close()
    assert "waiting for the first stats" in out and "Error" not in out


@pytest.mark.timeout(20)
def test_render_without_pnl_book_or_snapshots_says_so():
    out = text_of(dashboard.render(synthetic(pnl=False), None, now=NOW))
    assert re.search(r"PnL.*n/a", out)
    assert "not attached to the price book" in out
    empty = text_of(dashboard.render({}, None, now=NOW))
    assert len(re.findall(r"missing", empty)) == 4
    assert "no samples yet" in empty


def test_health_rules():
    h = dashboard.health
    assert h(None, NOW, 1.0).state == "missing"
    assert h(snap("x", {}, age=2.9), NOW, 1.0).state == "ok"
    assert h(snap("x", {}, age=3.1), NOW, 1.0).state == "stale"
    assert h(snap("x", {}, age=3.1), NOW, 2.0).state == "ok"
    assert h(snap("x", {}, final=True), NOW, 1.0, alive=lambda p: False).state == "stopped"
    assert h(snap("x", {}), NOW, 1.0, alive=lambda p: False).state == "dead"


# --- real terminals ------------------------------------------------------------------------------

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (apt-get install tmux)")


class Tmux:
    """A private tmux server (its own socket), so the tests never touch the user's sessions."""

    def __init__(self) -> None:
        self.socket = f"tstest-{uuid.uuid4().hex[:10]}"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=15)
        if done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, script: Path, width: int = 170, height: int = 50) -> None:
        self("new-session", "-d", "-x", str(width), "-y", str(height), f"bash {script}")

    def capture(self) -> str:
        return self("capture-pane", "-p", "-t", "0")

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"no {pattern!r} on screen within {timeout}s:\n{screen}")

    def kill(self) -> None:
        """Stop the server and remove its socket file (tmux leaves it behind)."""
        path = subprocess.run(["tmux", "-L", self.socket, "display-message", "-p",
                               "#{socket_path}"], capture_output=True, text=True, timeout=15)
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=15)
        if path.returncode == 0 and path.stdout.strip():
            Path(path.stdout.strip()).unlink(missing_ok=True)


def pane_script(tmp_path: Path, command: list[str]) -> Path:
    """The pane runs the command, then reports its exit code and whether the terminal settings
    came back, and stays open so the test can read that."""
    script = tmp_path / "pane.sh"
    quoted = " ".join(f"'{part}'" for part in command)
    script.write_text(f"cd '{tmp_path}'\nbefore=$(stty -g)\n{quoted}\necho \"EXIT=$?\"\n"
                      "if [ \"$(stty -g)\" = \"$before\" ]; then echo TTY=restored; "
                      "else echo TTY=changed; fi\nsleep 120\n")
    return script


def stack_flags(tmp_path: Path, shm: str) -> list[str]:
    return ["--price-port", "0", "--news-port", "0", "--order-port", "0", "--shm-name", shm,
            "--log-dir", str(tmp_path / "logs"), "--order-log", str(tmp_path / "orders.jsonl"),
            "--tick-rate", "500", "--news-rate", "20",
            "--set", "logging.stats_interval=0.25"]   # latency rows on screen sooner


def cleanup(tmp_path: Path, shm: str, tmux: Tmux | None = None) -> None:
    """After a failure too: stop politely (Ctrl+C), then kill, and never leave a segment.

    SIGKILLing an OrderBook that is still unlinking would leave /dev/shm behind, so children
    get time to exit on their own first."""
    if tmux is not None:
        try:
            if "TTY=" not in tmux.capture():
                tmux("send-keys", "-t", "0", "C-c")
                tmux.wait_for(r"TTY=\w+", timeout=20)
        except (RuntimeError, AssertionError, subprocess.TimeoutExpired):
            pass
        tmux.kill()
    pids = logged_pids(tmp_path).values()
    try:
        wait_until(lambda: not any(pid_alive(p) for p in pids), 15, what="children")
    except TimeoutError:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    owner = segment_owner(shm)
    if owner is not None and not pid_alive(owner):
        os.unlink(f"/dev/shm/{shm}")


def logged_pids(tmp_path: Path) -> dict[str, int]:
    try:
        text = (tmp_path / "logs" / "main.log").read_text()
    except FileNotFoundError:
        return {}
    return {m[1]: int(m[2]) for m in re.finditer(r"(\w+) ready \(pid (\d+)\)", text)}


AAPL_ROW = r"AAPL\s+([\d,]+\.\d\d)\s+\S*\s+([\d,]+)"


def watch_refresh_then_quit(tmux: Tmux, key: str) -> str:
    """The dashboard is up with live data, a changing field changes, then `key` quits it."""
    first = tmux.wait_for(AAPL_ROW + r"[\s\S]*\bok\b", timeout=60)
    row = re.search(AAPL_ROW, first).group(0)
    deadline = time.monotonic() + 20
    while (m := re.search(AAPL_ROW, tmux.capture())) and m.group(0) == row:
        assert time.monotonic() < deadline, f"dashboard did not refresh: {row}"
        time.sleep(0.25)
    tmux.wait_for(r"tick -> decision", timeout=30)     # latency rows from the snapshots
    tmux("send-keys", "-t", "0", key)
    return tmux.wait_for(r"TTY=\w+", timeout=40)


@needs_tmux
@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", ["q", "C-c"])
def test_main_dashboard_in_a_terminal_quits_cleanly(tmp_path, key):
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    tmux = Tmux()
    cmd = [sys.executable, str(ROOT / "main.py"), "--dashboard", "--duration", "90",
           *stack_flags(tmp_path, shm)]
    try:
        tmux.start(pane_script(tmp_path, cmd))
        after = watch_refresh_then_quit(tmux, key)
        assert "EXIT=0" in after, after
        assert "TTY=restored" in after, after
        assert tmux("display-message", "-p", "-t", "0", "#{alternate_on}").strip() == "0"
        # The stack stopped the way Ctrl+C stops it, and main's lines came back after the
        # dashboard: its stop reason and the exit summary.
        main_log = (tmp_path / "logs" / "main.log").read_text()
        reason = "dashboard quit" if key == "q" else "SIGINT"
        assert f"stopping ({reason}" in main_log, main_log[-2000:]
        assert "tradestack summary" in after
        # No child logged to the terminal while the dashboard ran; their files were written.
        assert (tmp_path / "logs" / "gateway.log").stat().st_size > 0
        assert not re.search(r"(?m)^[\d:.]+ (gateway|orderbook|strategy|order_manager) ",
                             after), after
        pids = logged_pids(tmp_path)
        assert set(pids) == {"order_manager", "gateway", "orderbook", "strategy"}
        wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 10, what="children")
        assert not shm_exists(shm)
    finally:
        cleanup(tmp_path, shm, tmux)


@needs_tmux
@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", ["q", "C-c"])
def test_monitor_attaches_to_a_running_stack(tmp_path, key):
    """The standalone monitor, attached by stats directory and segment name to a stack it did
    not start; quitting it leaves that stack running."""
    shm = f"tstest_{uuid.uuid4().hex[:12]}"
    stack = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--duration", "90",
                              *stack_flags(tmp_path, shm)], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                             start_new_session=True)
    tmux = Tmux()
    try:
        once = subprocess.run([sys.executable, "-m", "processes.tools.monitor", "--once",
                               "--stats-dir", str(tmp_path / "logs" / "stats"),
                               "--shm-name", shm], cwd=ROOT, capture_output=True, text=True,
                              timeout=30)
        assert once.returncode == 0, once.stderr
        assert "Prices" in once.stdout and "Processes" in once.stdout
        cmd = [sys.executable, "-m", "processes.tools.monitor", "--refresh", "0.25",
               "--stats-dir", str(tmp_path / "logs" / "stats"), "--shm-name", shm]
        script = pane_script(tmp_path, cmd)
        script.write_text(script.read_text().replace(f"cd '{tmp_path}'", f"cd '{ROOT}'"))
        tmux.start(script)
        after = watch_refresh_then_quit(tmux, key)
        assert "EXIT=0" in after and "TTY=restored" in after, after
        assert stack.poll() is None, "quitting the monitor must not stop the stack"
        assert shm_exists(shm)
        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=30) == 0
        pids = logged_pids(tmp_path)
        wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 10, what="children")
        assert not shm_exists(shm)
    finally:
        cleanup(tmp_path, shm, tmux)
        if stack.poll() is None:
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait()
        cleanup(tmp_path, shm)


@pytest.mark.timeout(20)
def test_render_shows_replay_progress():
    snaps = synthetic()
    snaps["gateway"]["counters"].update(replay_rows=3000, replay_sent=4500, replay_done=False)
    assert "replay: row 1,500 of 3,000, pass 2" in text_of(dashboard.render(snaps, None, now=NOW))
    snaps["gateway"]["counters"].update(replay_sent=3000, replay_done=True)
    assert "row 3,000 of 3,000, finished" in text_of(dashboard.render(snaps, None, now=NOW))


@needs_tmux
@pytest.mark.timeout(150)
def test_demo_script_runs_records_and_stops_clean(tmp_path):
    """scripts/demo.sh: five panes on a private tmux server, a recording of the dashboard, every
    process stopped by Ctrl+C with exit code 0, and nothing left behind."""
    record = tmp_path / "demo.frames"
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh"), "--duration", "7",
                             "--record", str(record), "--workdir", str(tmp_path / "work"),
                             "--no-attach"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)     # the script's trap stops the panes with Ctrl+C
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    for name in ("strategy", "orderbook", "gateway", "order_manager", "monitor"):
        assert f"{name} exited 0" in out, out
    assert "clean stop, nothing left in /dev/shm" in out and "tradestack summary" in out
    socket_name = re.search(r"tmux socket (\S+)", out).group(1)
    assert subprocess.run(["tmux", "-L", socket_name, "list-sessions"], capture_output=True,
                          timeout=10).returncode != 0, "the demo's tmux server is still up"
    assert not (Path(f"/tmp/tmux-{os.getuid()}") / socket_name).exists()
    frames = record.read_text().split("=== frame ")[1:]
    assert len(frames) >= 5
    assert "\x1b[" in frames[-1], "capture-pane -e keeps the colours"
    last = re.sub(r"\x1b\[[0-9;]*m", "", frames[-1])
    assert re.search(AAPL_ROW, last) and "Processes" in last, last
    pids = [int(p) for p in re.findall(r"pid=(\d+)", (tmp_path / "work" / "logs" /
                                                       "gateway.log").read_text())]
    assert pids and not any(pid_alive(p) for p in pids)
