"""Helpers for tests that run main.py itself as a subprocess, as a user's terminal would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from stackutil import shm_exists, wait_until

from ext.layout import pid_alive

ROOT = Path(__file__).resolve().parents[1]


def main_cmd(tmp_path: Path, shm: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"),
            "--price-port", "0", "--news-port", "0", "--order-port", "0",
            "--shm-name", shm, "--log-dir", str(tmp_path / "logs"),
            "--order-log", str(tmp_path / "orders.jsonl"),
            "--news-rate", "50", "--tick-rate", "2000", *extra]


def child_pids(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"([\w.]+) ready \(pid (\d+)\)", output)}


def start_main(tmp_path: Path, shm: str, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """Start main.py in its own session (as a terminal would) and read its output until the
    whole stack reports running."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(main_cmd(tmp_path, shm, *extra), cwd=tmp_path,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    while True:  # bounded by the test's timeout; EOF means main.py died during start-up
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            proc.communicate()
            raise AssertionError("main.py exited during start-up:\n" + "".join(lines))
        lines.append(line)
        if "stack running" in line:
            return proc, lines


def reap(proc: subprocess.Popen) -> None:
    """Teardown for a main.py the test may have left running: kill its whole session."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def assert_nothing_left(output: str, shm: str, *strategies: str) -> None:
    """Every child (the four, and the named extra strategy processes) exited; no segment."""
    pids = child_pids(output)
    expected = {"order_manager", "gateway", "orderbook", "strategy", *strategies}
    assert set(pids) == expected, output[-2000:]
    wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 5, what="children to exit")
    assert not shm_exists(shm)


class CollectedRun:
    """A command in its own session, its output (stdout and stderr) collected line by line by
    a thread, so a test can wait on it while it runs."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     env=None if env is None else {**os.environ, **env})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop_when(self, done: Callable[[], object], what: str, timeout: float = 60) -> int:
        """Wait until `done()` holds while the command runs, then SIGTERM it as a user's kill
        stops it; its exit code. The caller's finally still calls close()."""
        wait_until(lambda: done() or self.proc.poll() is not None, timeout, interval=0.05,
                   what=what)
        if self.proc.poll() is not None:
            raise AssertionError(f"exited ({self.proc.returncode}) before {what}:\n"
                                 f"{self.output[-3000:]}")
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(30)

    def close(self) -> None:
        """Teardown: kill the session if it still runs, and collect the rest of the output."""
        reap(self.proc)
        self._reader.join(5)


class MainRun(CollectedRun):
    """main.py in its own session, its output collected by a thread so the test can wait on it."""

    def __init__(self, tmp_path: Path, shm: str, *extra: str) -> None:
        super().__init__(main_cmd(tmp_path, shm, *extra), tmp_path)

    def wait_for(self, pattern: str, timeout: float = 20.0, after: int = 0) -> re.Match:
        """The first match of `pattern` in the output lines from index `after` on."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[after:]:
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in main.py output:\n{self.output[-3000:]}")
            time.sleep(0.02)
