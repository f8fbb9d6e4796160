"""Shared helpers for the process-based benchmarks (bench_orders, bench_throughput, bench_scale;
hop_percentiles also for bench_e2e and bench_multihost).

They run real stack processes (spawned like main.py spawns them) on loopback with ephemeral ports
and a ``tsbench_<uuid>`` segment, so each benchmark measures what the stack really does. Under
``--benchmark-disable`` (CI runs every benchmark once) each measurement shrinks to a short smoke
run, a trading run to the time until SMOKE_ACKS orders are acked; ``--benchmark-only`` runs the
full durations. Percentiles come from HdrHistogram, not sorted lists.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from ext import SharedPriceBook
from processes.shared import config, placement, telemetry
from processes.shared.runtime import die_with_parent
from processes.supervisor.stack import _child

CTX = mp.get_context("spawn")
SMOKE_SECONDS = 0.3      # per measurement point under --benchmark-disable (CI): some samples
# Under --benchmark-disable a trading run proves the path once this many orders are acked (the
# hop histograms then hold samples); it fails if they are not acked within SMOKE_DEADLINE s.
SMOKE_ACKS = 3
SMOKE_DEADLINE = 30.0
SMOKE_STATS_INTERVAL = 0.1   # s between snapshots in a smoke run: the acks are seen soon after
READY_TIMEOUT = 15.0     # a child that has not reported ready by then failed
STOP_TIMEOUT = 5.0       # SIGTERM grace before SIGKILL
READY = object()         # placeholder in Child args for the write end of the ready pipe


def smoke(benchmark: Any) -> bool:
    """True under --benchmark-disable: pytest-benchmark runs the body once, untimed."""
    return bool(getattr(benchmark, "disabled", False))


def seconds(benchmark: Any, full: float) -> float:
    """Measurement length: `full` when timed, SMOKE_SECONDS when CI only checks that it runs."""
    return SMOKE_SECONDS if smoke(benchmark) else full


def until_acked(acks: Callable[[], int], what: str, n: int = SMOKE_ACKS,
                timeout: float = SMOKE_DEADLINE) -> float:
    """Poll `acks` (a Strategy's published ack count) until it reaches `n`; the seconds it took.

    A smoke run's length: the path is proven (orders made, booked, acked) as soon as it is.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while (got := acks()) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {got} of {n} orders acked after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def run_once(benchmark: Any, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One process-level measurement as one pedantic round; its result lands in extra_info."""
    result = benchmark.pedantic(fn, rounds=1, iterations=1)
    benchmark.extra_info["mode"] = "smoke" if smoke(benchmark) else "full"
    benchmark.extra_info.update(result)
    return result


def symbols(n: int) -> list[str]:
    """S00001, S00002, ...: valid, distinct names for the scale benchmarks."""
    return [f"S{i:05d}" for i in range(1, n + 1)]


def bench_config(tmp_path: Path, **overrides: Any) -> config.Config:
    """Ephemeral ports, a tsbench_<uuid> segment, logs and order log under tmp_path."""
    base: dict[str, Any] = {
        **placement.layout_overrides("unpinned"),   # placement is bench_e2e's subject, not ours
        "network.price_port": 0, "network.news_port": 0, "network.order_port": 0,
        "market.shm_name": f"tsbench_{uuid.uuid4().hex[:12]}",
        "logging.dir": str(tmp_path / "logs"),
        "order_manager.order_log": str(tmp_path / "orders.jsonl"),
        "gateway.news_rate": 1.0,   # news is not what these benchmarks measure
        "logging.stats_interval": 0.25,   # process-side snapshots: <= 0.25 s stale at window start
    }
    base.update(overrides)
    return config.load(None, base)


# --- latency histograms ---------------------------------------------------------------------------

class Latency:
    """Nanosecond samples in an HdrHistogram (1 ns .. 60 s, 3 significant digits)."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(1, telemetry.HIGHEST_NS, telemetry.SIGNIFICANT_DIGITS)

    @classmethod
    def from_pairs(cls, pairs: Iterable[Any]) -> Latency:
        """From a process's published (bucket, count) pairs (processes.shared.telemetry)."""
        lat = cls()
        for value, count in pairs:
            if count > 0:
                lat.hist.record_value(int(value), int(count))
        return lat

    def record(self, ns: int) -> None:
        self.hist.record_value(ns if ns > 0 else 1)

    def summary(self, prefix: str) -> dict[str, float | int]:
        """{prefix}_p50_us, _p99_us, _p99_9_us, _max_us, _mean_us, _samples."""
        h = self.hist
        out: dict[str, float | int] = {
            f"{prefix}_p{label}_us": round(h.get_value_at_percentile(p) / 1e3, 1)
            for label, p in (("50", 50), ("99", 99), ("99_9", 99.9))}
        out[f"{prefix}_max_us"] = round(h.get_max_value() / 1e3, 1)
        out[f"{prefix}_mean_us"] = round(h.get_mean_value() / 1e3, 1)
        out[f"{prefix}_samples"] = h.get_total_count()
        return out


def hop_latency(before: dict[str, Any], after: dict[str, Any], hop: str,
                prefix: str) -> dict[str, float | int]:
    """A process's own histogram of `hop` between two of its snapshots (after minus before).

    The process records every event, not a conflated sample; `before` may be up to one
    stats_interval older than the window it opens, and `after` is the final snapshot at stop.
    """
    def pairs(snap: dict[str, Any]) -> dict[int, int]:
        return dict(telemetry.decode_pairs(snap.get("latency", {}).get(hop, {}).get("pairs", [])))

    old = pairs(before)
    return Latency.from_pairs((b, c - old.get(b, 0)) for b, c in pairs(after).items()
                              ).summary(prefix)


# --- shared memory --------------------------------------------------------------------------------

def hop_percentiles(latency: dict[str, dict[str, Any]], hops: Iterable[str],
                    prefix: str = "") -> dict[str, Any]:
    """{prefix}{hop}_count and _{p50,p99,p99.9,max}_us for each hop in `latency` (the rows of
    processes.supervisor.summary.build(...)["latency"], by name); hops it lacks are left out."""
    out: dict[str, Any] = {}
    for hop in hops:
        row = latency.get(hop)
        if row is None:
            continue
        out[f"{prefix}{hop}_count"] = row["count"]
        for key in ("p50", "p99", "p99.9", "max"):
            out[f"{prefix}{hop}_{key}_us"] = round(row[key] / 1e3, 2)
    return out


def tick_seq_total(book: SharedPriceBook) -> int:
    """Sum of the per-symbol Gateway tick sequences in the slots = ticks written so far."""
    read = book.read_slot
    return sum(read(i)[2] for i in range(book.nsymbols))


def wait_all_written(book: SharedPriceBook, timeout: float = 15.0) -> None:
    """Until every slot holds a tick, i.e. the Gateway's connect snapshot is fully written.

    The snapshot's frames all carry the connect time, and the OrderBook needs tens of ms to
    write 10,000 of them: measured, that would pass for tick latency.
    """
    read, n = book.read_slot, book.nsymbols
    deadline = time.monotonic() + timeout
    while any(read(i)[3] == 0 for i in range(n)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{book.name}: not every slot written after {timeout} s")
        time.sleep(0.02)


def poll_latency(book: SharedPriceBook, duration: float) -> dict[str, Any]:
    """Busy-poll a PriceReader for `duration` s; tick -> shm and tick -> reader latencies.

    A PriceReader reports the latest value per changed slot, so this samples the newest tick of
    each symbol per poll (conflated), not every tick. tick -> shm is write_ns - sent_ns (Gateway
    send to OrderBook write); tick -> reader adds the time until this reader saw it.
    """
    shm, seen = Latency(), Latency()
    rec_shm, rec_seen = shm.record, seen.record
    with book.reader() as reader:
        reader.poll()   # drop what was written before the measurement
        sent, wns = reader.sent_ns, reader.write_ns
        poll, now = reader.poll, time.monotonic_ns
        seq0, t0 = tick_seq_total(book), time.monotonic()
        end_ns = int((t0 + duration) * 1e9)
        while True:
            n = poll()
            if n:
                t = now()
                for k in range(n):
                    s = sent[k]
                    if s:
                        rec_shm(wns[k] - s)
                        rec_seen(t - s)
                if t >= end_ns:
                    break
            elif now() >= end_ns:
                break
        elapsed = time.monotonic() - t0
        ticks = tick_seq_total(book) - seq0
    return {"ticks_per_s": round(ticks / elapsed), "ticks": ticks, "seconds": round(elapsed, 2),
            **shm.summary("tick_to_shm"), **seen.summary("tick_to_reader")}


# --- processes ------------------------------------------------------------------------------------

class Child:
    """One spawned process that reports an info dict (or {"error": ...}) on a ready pipe."""

    def __init__(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        self.name, self.target, self.args = name, target, args
        self.proc: mp.process.BaseProcess | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        reader, writer = CTX.Pipe(duplex=False)
        args = tuple(writer if a is READY else a for a in self.args)
        self.proc = CTX.Process(target=self.target, args=args, name=self.name)
        self.proc.start()
        writer.close()
        try:
            if reader not in wait([reader, self.proc.sentinel], timeout=READY_TIMEOUT):
                raise RuntimeError(f"{self.name} did not report ready (exit {self.proc.exitcode})")
            try:
                self.info = reader.recv()
            except EOFError:
                raise RuntimeError(f"{self.name} died before ready") from None
        finally:
            reader.close()
        if "error" in self.info:
            raise RuntimeError(f"{self.name} failed: {self.info['error']}")
        return self.info

    def stop(self) -> int | None:
        """SIGTERM (a clean stop: the OrderBook unlinks its segment), SIGKILL after 5 s."""
        proc = self.proc
        if proc is None:
            return None
        if proc.is_alive():
            proc.terminate()
            proc.join(STOP_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join(STOP_TIMEOUT)
        return proc.exitcode


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@contextlib.contextmanager
def pinned(cpus: list[int] | None) -> Iterator[None]:
    """Pin this process to `cpus` for the block (None: leave it be), then restore.

    Pin only after spawning children: a child inherits the affinity of its parent.
    """
    if not cpus:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def echo_server(ready: Any, cpus: list[int] | None = None) -> None:
    """Loopback floor for the ack round trip: blocking socket, echoes every frame as it ends."""
    die_with_parent()
    if cpus:
        os.sched_setaffinity(0, cpus)
    srv = socket.create_server(("127.0.0.1", 0))
    ready.send({"port": srv.getsockname()[1]})
    ready.close()
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            pending = b""
            while data := conn.recv(65536):
                *frames, pending = (pending + data).split(b"*")
                for frame in frames:
                    conn.sendall(frame + b"*")


class Procs:
    """Everything one benchmark started; close() undoes it in reverse, also after a failure.

    Stops children (SIGTERM, then SIGKILL), closes sockets and attached books, and removes a
    tsbench segment that a killed OrderBook could not unlink.
    """

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}
        self._stack = contextlib.ExitStack()
        self._segments: list[str] = []
        self._stats: dict[str, Path] = {}   # process -> its snapshot file

    def start(self, name: str, cfg: config.Config) -> dict[str, Any]:
        """Start processes.<name> as main.py does; fills the bound ports into cfg for the next."""
        child = Child(name, _child, name, cfg, READY, CTX.Lock())
        self._add(name, child)
        self._stats[name] = telemetry.stats_dir(cfg.logging.dir,
                                                cfg.logging.stats_dir) / f"{name}.json"
        if name == "orderbook":
            self._segments.append(cfg.market.shm_name)
        info = child.start()
        if name == "gateway":
            cfg.network.price_port, cfg.network.news_port = info["price_port"], info["news_port"]
        elif name == "order_manager":
            cfg.network.order_port = info["order_port"]
        return info

    def start_echo(self, cpus: list[int] | None = None) -> int:
        return self._add("echo", Child("echo", echo_server, READY, cpus)).start()["port"]

    def feed(self, cfg: config.Config) -> SharedPriceBook:
        """Gateway + OrderBook, and this process attached to the segment the OrderBook made."""
        self.start("gateway", cfg)
        self.start("orderbook", cfg)
        book = SharedPriceBook(name=cfg.market.shm_name, create=False)
        self._stack.callback(book.close)
        wait_all_written(book)
        return book

    def connect(self, port: int, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._stack.callback(sock.close)
        return sock

    def snapshot(self, name: str) -> dict[str, Any]:
        """The latest stats snapshot the process published (counters, latency pairs)."""
        return telemetry.read_snapshot(self._stats[name]) or {}

    def stop(self, name: str) -> dict[str, Any]:
        """Stop one child cleanly; its final snapshot ({} if it wrote none)."""
        self.children[name].stop()
        snap = self.snapshot(name)
        return snap if snap.get("final") else {}

    def _add(self, name: str, child: Child) -> Child:
        self.children[name] = child
        self._stack.callback(child.stop)
        return child

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            for name in self._segments:
                if os.path.exists(f"/dev/shm/{name}"):
                    os.unlink(f"/dev/shm/{name}")
                    # The OrderBook registered it with our resource tracker (spawn children share
                    # it): forget it, or the tracker warns about a leak it then fails to unlink.
                    with contextlib.suppress(Exception):
                        resource_tracker.unregister(f"/{name}", "shared_memory")

