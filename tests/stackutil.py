"""Helpers for tests that run real stack processes on loopback with ephemeral ports."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time
import uuid
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ext import wire_py
from processes.shared import config, placement
from processes.supervisor.stack import _child

CTX = mp.get_context("spawn")


def make_config(tmp_path: Path, **overrides: Any) -> config.Config:
    """Ephemeral ports, a unique segment name, logs and order log under tmp_path."""
    base = {
        # Tests run unpinned at normal priority: they exercise behaviour, not placement (the
        # default layout runs in tests/test_main.py, every layout in bench/bench_e2e.py).
        **placement.layout_overrides("unpinned"),
        "network.price_port": 0, "network.news_port": 0, "network.order_port": 0,
        "market.shm_name": f"tstest_{uuid.uuid4().hex[:12]}",
        "logging.dir": str(tmp_path / "logs"),
        "order_manager.order_log": str(tmp_path / "orders.jsonl"),
    }
    base.update(overrides)
    return config.load(None, base)


def hold_port() -> socket.socket:
    """A loopback port reserved for the whole test: bound with SO_REUSEADDR and never listening.

    A process the test starts on this port (our Servers set SO_REUSEADDR) binds and listens
    beside it; while none listens, e.g. between killing a process and starting it again on the
    same port, nobody else can take the port: an ephemeral bind or connect skips a bound port,
    and a plain bind of it fails. Close it at the end of the test.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def parse_price(frame: bytes | memoryview) -> tuple[bytes, float, int, int]:
    """(symbol, price, seq, sent_ns) of a price frame by the twin decoder's grammar (what the
    OrderBook accepts); a malformed frame fails the test with the decoder's reason."""
    got = wire_py.parse_price_frame(bytes(frame))
    assert not isinstance(got, str), f"{bytes(frame)[:80]!r}: {got}"
    return got


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


class Child:
    """One stack process (processes.<name>.run) in a spawn child, started like main.py does."""

    def __init__(self, name: str, cfg: config.Config, lock: Any = None) -> None:
        self.name = name
        self.cfg = cfg
        self.lock = lock if lock is not None else CTX.Lock()
        self.proc: mp.process.BaseProcess | None = None
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 15.0) -> dict[str, Any]:
        reader, writer = CTX.Pipe(duplex=False)
        self.proc = CTX.Process(target=_child, args=(self.name, self.cfg, writer, self.lock),
                                name=self.name)
        self.proc.start()
        writer.close()
        ready = wait([reader, self.proc.sentinel], timeout=timeout)
        if reader not in ready:
            self.stop()
            raise RuntimeError(f"{self.name} did not report ready (exit {self.proc.exitcode})")
        try:
            self.info = reader.recv()
        except EOFError:
            self.proc.join(5)
            raise RuntimeError(
                f"{self.name} died before ready (exit {self.proc.exitcode})") from None
        finally:
            reader.close()
        if "error" in self.info:
            self.stop()
            raise RuntimeError(f"{self.name} failed: {self.info['error']}")
        return self.info

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout)
        return self.proc.exitcode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.join(5)


def start(children: list[Child], name: str, cfg: config.Config, **kw: Any) -> dict[str, Any]:
    """Start one stack process and register it with the test's `children` fixture, which stops
    it (and every other) at teardown, pass or fail."""
    child = Child(name, cfg, **kw)
    children.append(child)
    return child.start()


def recv_frames(sock: socket.socket, count: int, timeout: float = 5.0,
                delimiter: bytes = b"*") -> list[bytes]:
    """Read until `count` complete frames arrived (blocking socket, overall deadline)."""
    deadline = time.monotonic() + timeout
    buf = b""
    frames: list[bytes] = []
    while len(frames) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {len(frames)} of {count} frames")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"peer closed after {len(frames)} frames")
        buf += chunk
        *complete, buf = buf.split(delimiter)
        frames.extend(complete)
    return frames


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks -> seconds)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


FAULT_RESULTS_ENV = "TRADESTACK_FAULT_RESULTS"


def record_fault(test: str, recovery_s: float, **details: Any) -> dict[str, Any]:
    """A fault test's measured recovery: printed, and written as <test>.json into the directory
    named by $TRADESTACK_FAULT_RESULTS (if set) for bench/report.py to tabulate."""
    result = {"test": test, "recovery_s": round(recovery_s, 4), "details": details}
    print(f"\nfault recovery {test}: {json.dumps(result)}")
    directory = os.environ.get(FAULT_RESULTS_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{test}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
