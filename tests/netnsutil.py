"""Hosts made of Linux network namespaces, for tests and benchmarks of a stack spread over them.

`Lan` builds one "core" namespace with a bridge and one namespace per trading host, each joined
to the bridge by a veth pair. Addresses are in 198.18.0.0/15 (reserved for benchmarking, RFC
2544) and exist only inside these namespaces: nothing outside them is ever dialled. Namespaces
share the machine's /dev/shm and pid space, so every host needs its own segment name.

`Desk` runs a core and trading hosts on a Lan with main.py --role, as the README's "More than
one host" section starts them. `unavailable()` says why namespaces cannot be made here (not
root, no `ip`, the kernel or a container refuses), or None; callers skip with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mainutil import CollectedRun

from processes.shared import telemetry

ROOT = Path(__file__).resolve().parents[1]
SUBNET = "198.18.0"      # /24 on the core's bridge: core .1, trading hosts .2, .3, ...
PREFIX = 24
HOST_IF = "eth0"         # a trading host's end of its veth pair


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def unavailable() -> str | None:
    """Why network namespaces cannot be made on this machine, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip tool (iproute2) is not installed"
    probe = f"tsprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add fails here: {made.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
                   check=False)
        if veth.returncode != 0:
            return f"no veth pairs in a namespace: {veth.stderr.strip()}"
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"no bridge in a namespace: {bridge.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class Lan:
    """A core namespace (bridge, address .1) and `hosts` trading namespaces (.2, .3, ...).

    Names carry the pid and a tag, so parallel runs never share one; close() deletes every
    namespace (and with it every veth), also after a failed build.
    """

    def __init__(self, tag: str, hosts: int) -> None:
        base = f"ts{os.getpid()}{tag}"
        self.core = f"{base}c"
        self.hosts = [f"{base}h{i}" for i in range(hosts)]
        self.core_addr = f"{SUBNET}.1"
        self.addrs = {ns: f"{SUBNET}.{i + 2}" for i, ns in enumerate(self.hosts)}
        self.made: list[str] = []

    def build(self) -> Lan:
        try:
            for ns in (self.core, *self.hosts):
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.core, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.core, "addr", "add", f"{self.core_addr}/{PREFIX}", "dev", "br0")
            _ip("-n", self.core, "link", "set", "br0", "up")
            for i, ns in enumerate(self.hosts):
                port = f"vh{i}"
                _ip("-n", self.core, "link", "add", port, "type", "veth", "peer", "name",
                    HOST_IF, "netns", ns)
                _ip("-n", self.core, "link", "set", port, "master", "br0")
                _ip("-n", self.core, "link", "set", port, "up")
                _ip("-n", ns, "addr", "add", f"{self.addrs[ns]}/{PREFIX}", "dev", HOST_IF)
                _ip("-n", ns, "link", "set", HOST_IF, "up")
        except BaseException:
            self.close()
            raise
        return self

    def link(self, ns: str, up: bool) -> None:
        """Take a trading host's link down or bring it back (its end of the veth pair)."""
        _ip("-n", ns, "link", "set", HOST_IF, "up" if up else "down")

    def delay(self, ns: str, ms: float) -> str | None:
        """Delay every packet the host sends by `ms` (netem); why it cannot, or None."""
        if shutil.which("tc") is None:
            return "the tc tool (iproute2) is not installed"
        done = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", HOST_IF,
                               "root", "netem", "delay", f"{ms}ms"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            return f"tc qdisc add ... netem fails here (no netem qdisc?): {done.stderr.strip()}"
        return None

    def close(self) -> None:
        for ns in reversed(self.made):
            _ip("netns", "del", ns, check=False)
        self.made.clear()


def time_namespaces_unavailable() -> str | None:
    """Why clock_ahead() cannot work here (no time namespaces, an old unshare), or None."""
    if shutil.which("unshare") is None:
        return "the unshare tool (util-linux) is not installed"
    done = subprocess.run([*clock_ahead(1), "true"], capture_output=True, text=True,
                          timeout=10)
    if done.returncode != 0:
        return f"no time namespaces here (unshare --time --monotonic): {done.stderr.strip()}"
    return None


def clock_ahead(seconds: int) -> tuple[str, ...]:
    """A command prefix that gives its command's children CLOCK_MONOTONIC `seconds` ahead, as
    on a host that booted that much earlier: a new time namespace applies to the processes the
    command starts (main.py's children, which stamp and read the ticks), and without --fork the
    command is still our child, so its signals and exit code are its own."""
    return ("unshare", "--time", "--monotonic", str(seconds))


class HostRun(CollectedRun):
    """`python main.py ARGS` inside namespace `ns` (behind the `wrap` command prefix, if any),
    in its own session, its output collected."""

    def __init__(self, ns: str, workdir: Path, args: list[str],
                 env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> None:
        self.ns = ns
        self.workdir = workdir
        super().__init__(["ip", "netns", "exec", ns, *wrap, sys.executable,
                          str(ROOT / "main.py"), *args], workdir, env or {})

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Until `text` is in the output; AssertionError with the output if main.py exits or
        the deadline passes first."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._reader.join(1)
                raise AssertionError(f"{self.ns}: no {text!r} in main.py output:\n"
                                     f"{self.output[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as a user's kill does; the exit code (SIGKILL of the session if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        return self.proc.returncode

    def kill(self) -> None:
        """Teardown: the whole session, whatever state it is in."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._reader.join(5)


PORTS = ("--price-port", "5001", "--news-port", "5002", "--order-port", "5003")
# The built-in strategy tuned to trade often (as bench/bench_e2e.py tunes it).
TRADING_PARAMS = ("--set", "strategy.params.short_window=2", "--set",
                  "strategy.params.long_window=4", "--set", "strategy.params.bullish=50",
                  "--set", "strategy.params.bearish=50")


class Desk:
    """A core and `hosts` trading hosts on a Lan, each a `python main.py --role ...` run with
    `common` flags, sharing a token; close() undoes namespaces, processes and segments whatever
    happened. Each host works in its own directory under `tmp` (logs/, the core's
    orders.jsonl) and has its own segment name."""

    def __init__(self, tmp: Path, hosts: int = 2, common: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.common = ("--log-dir", "logs", *common)
        self.tag = uuid.uuid4().hex[:4]
        self.token = f"desk-{uuid.uuid4().hex[:12]}"
        self.lan = Lan(self.tag, hosts).build()
        self.runs: list[HostRun] = []
        self.core: HostRun | None = None
        self.trading: dict[str, HostRun] = {}
        self.segments = {ns: f"ts_{self.tag}_{i}" for i, ns in enumerate(self.lan.hosts)}
        self.core_segment = f"ts_{self.tag}_core"   # never created: the core has no book

    def client(self, ns: str) -> str:
        """The strategy name (the OrderManager's client) of trading host `ns`."""
        return f"desk-{self.lan.hosts.index(ns)}"

    def workdir(self, ns: str) -> Path:
        return self.tmp / ("core" if ns == self.lan.core else ns)

    def _start(self, ns: str, args: list[str], workdir: Path | None = None,
               wrap: tuple[str, ...] = ()) -> HostRun:
        run = HostRun(ns, workdir or self.workdir(ns), [*args, *PORTS, *self.common],
                      env={"TRADESTACK_TOKEN": self.token}, wrap=wrap)
        self.runs.append(run)
        run.wait_for("stack running")
        return run

    def start_core(self, *extra: str, wrap: tuple[str, ...] = ()) -> HostRun:
        addr = self.lan.core_addr
        self.core = self._start(self.lan.core, [
            "--role", "core", "--gateway-listen", addr, "--order-listen", addr,
            "--shm-name", self.core_segment, "--order-log", "orders.jsonl", *extra], wrap=wrap)
        return self.core

    def start_trading(self, ns: str, *extra: str, wrap: tuple[str, ...] = ()) -> HostRun:
        addr = self.lan.core_addr
        self.trading[ns] = self._start(ns, [
            "--role", "trading", "--gateway-host", addr, "--order-host", addr,
            "--shm-name", self.segments[ns], "--set", f"strategy.name={self.client(ns)}",
            *TRADING_PARAMS, *extra], wrap=wrap)
        return self.trading[ns]

    def start_single(self, *extra: str) -> HostRun:
        """The whole stack (--role all) on loopback in the core's namespace, for comparison:
        the same settings as the trading hosts, one host."""
        self.segments["single"] = f"ts_{self.tag}_all"
        return self._start(self.lan.core, ["--shm-name", self.segments["single"],
                                           "--order-log", "orders.jsonl", *TRADING_PARAMS,
                                           *extra], self.tmp / "single")

    def booked(self) -> list[dict[str, Any]]:
        """The core's order log, one record per booked order."""
        path = self.workdir(self.lan.core) / "orders.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def booked_by(self, ns: str) -> int:
        client = self.client(ns)
        return sum(1 for rec in self.booked() if rec["client"] == client)

    def snapshot(self, ns: str, process: str) -> dict[str, Any]:
        """The latest stats snapshot of `process` on host `ns` ({} before the first)."""
        return telemetry.read_snapshot(self.workdir(ns) / "logs" / "stats"
                                       / f"{process}.json") or {}

    def counter(self, ns: str, process: str, key: str, timeout: float = 5.0) -> Any:
        """`key` of the latest readable snapshot of `process` on host `ns`. Waits for one that
        has it: an unreadable or missing snapshot is not a counter of 0."""
        deadline = time.monotonic() + timeout
        while True:
            counters = self.snapshot(ns, process).get("counters", {})
            if key in counters:
                return counters[key]
            if time.monotonic() > deadline:
                raise AssertionError(f"no readable {process} snapshot with {key!r} on {ns} "
                                     f"within {timeout:g}s")
            time.sleep(0.05)

    def close(self) -> None:
        for run in reversed(self.runs):
            run.kill()
        self.lan.close()
        for name in (*self.segments.values(), self.core_segment):
            Path(f"/dev/shm/{name}").unlink(missing_ok=True)
