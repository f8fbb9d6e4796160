"""A hostile or corrupted shared-memory book, on a LIVE stack: each test corrupts the running
segment one way and asserts that no process exits, that no order is sent at an invalid price,
that the episode is logged once, and that trading resumes by itself within 1 s of the
corruption ending (measured: stackutil.record_fault, $TRADESTACK_FAULT_RESULTS).

One stack serves the whole module (starting four processes per case would dominate the run);
every case waits for orders to flow before it corrupts, so cases do not depend on each other.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stackutil import CTX, Child, make_config, record_fault, shm_exists, wait_until

from ext import layout

KINDS = ["nan", "inf", "huge", "zero", "odd_seq", "random_slots", "magic", "symbol_rename",
         "reader_garbage", "unlink", "held_lock"]
# What each corruption logs once (process, text), when it logs at all.
EPISODE_LINES = {
    "huge": ("strategy", "implausible price of"),
    "magic": ("orderbook", "was corrupted; rewrote header"),
    "symbol_rename": ("orderbook", "was corrupted; rewrote symbol table"),
    "reader_garbage": ("orderbook", "was corrupted; rewrote reader entry"),
    "unlink": ("orderbook", "re-created it"),
    "held_lock": ("orderbook", "is held by another process"),
}


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.lock = CTX.Lock()
        self.cfg = make_config(tmp, **{
            "gateway.tick_rate": 2000, "gateway.news_rate": 200, "gateway.seed": 11,
            "strategy.params.short_window": 2, "strategy.params.long_window": 4,
            "strategy.params.bullish": 50, "strategy.params.bearish": 50,
            "strategy.max_price_jump": 0.5, "logging.stats_interval": 0.1})
        self.children: list[Child] = []
        self.orders = tmp / "orders.jsonl"

    def start(self) -> None:
        cfg = self.cfg
        cfg.network.order_port = self._start("order_manager")["order_port"]
        gw = self._start("gateway")
        cfg.network.price_port, cfg.network.news_port = gw["price_port"], gw["news_port"]
        self._start("orderbook", lock=self.lock)
        self._start("strategy")

    def _start(self, name: str, **kw) -> dict:
        child = Child(name, self.cfg, **kw)
        self.children.append(child)
        return child.start()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def booked(self) -> list[dict]:
        try:
            text = self.orders.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(x) for x in text.splitlines() if x.endswith("}")]

    def log(self, process: str) -> str:
        try:
            return (self.tmp / "logs" / f"{process}.log").read_text()
        except FileNotFoundError:
            return ""


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("shmfaults"))
    try:
        s.start()
        yield s
    finally:
        s.stop()
        if shm_exists(s.cfg.market.shm_name):
            layout.unlink_untracked(s.cfg.market.shm_name)


# --- the corrupter ------------------------------------------------------------------------------

class Corrupter:
    """Writes into the live segment as any process that can open /dev/shm/<name> can: no lock,
    no protocol, untracked (so this process's resource tracker never unlinks it)."""

    def __init__(self, name: str) -> None:
        self.shm = layout.attach_shm(name)
        self.buf = self.shm.buf
        self.n = struct.unpack_from("<I", self.buf, layout.HEADER_OFFSETS["nsymbols"])[0]
        self.slots = layout.slots_offset(self.n)

    def close(self) -> None:
        self.buf = None
        self.shm.close()

    def slot_price(self, i: int, price: float, duration: float = 0.3) -> None:
        """Keep writing `price` into slot i for `duration` (the OrderBook overwrites it with
        every real tick), bumping publish_seq so that readers look."""
        off = self.slots + i * layout.SLOT_SIZE
        pub = layout.CONTROL_OFFSET + layout.CONTROL_OFFSETS["publish_seq"]
        end = time.monotonic() + duration
        while time.monotonic() < end:
            seq = struct.unpack_from("<Q", self.buf, off)[0]
            struct.pack_into("<d", self.buf, off + layout.SLOT_OFFSETS["price"], price)
            struct.pack_into("<Q", self.buf, off, (seq | 1) + 1)   # even and new
            p = struct.unpack_from("<I", self.buf, pub)[0]
            struct.pack_into("<I", self.buf, pub, (p + 1) & 0xFFFFFFFF)
            time.sleep(0.001)

    def odd_seqs(self) -> None:
        for i in range(self.n):
            off = self.slots + i * layout.SLOT_SIZE
            seq = struct.unpack_from("<Q", self.buf, off)[0]
            struct.pack_into("<Q", self.buf, off, seq | 1)

    def random_slots(self) -> None:
        import random
        rnd = random.Random(5)
        size = self.n * layout.SLOT_SIZE
        self.buf[self.slots:self.slots + size] = bytes(rnd.getrandbits(8) for _ in range(size))

    def magic(self) -> None:
        self.buf[0:8] = b"XXXXXXXX"

    def rename(self) -> None:
        off = layout.SYMTAB_OFFSET
        self.buf[off:off + layout.SYMBOL_WIDTH] = b"ZZZZ".ljust(layout.SYMBOL_WIDTH, b"\0")

    def reader_garbage(self) -> None:
        size = layout.MAX_READERS * layout.READER_ENTRY_SIZE
        self.buf[layout.READERS_OFFSET:layout.READERS_OFFSET + size] = b"\xa5" * size


def tracked_attach_and_exit(name: str) -> None:
    """A separate interpreter attaching with a tracked SharedMemory and exiting: Python 3.11's
    resource tracker unlinks the segment when that interpreter exits."""
    code = ("from multiprocessing.shared_memory import SharedMemory\n"
            f"s = SharedMemory({name!r})\ns.close()\n")
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, timeout=30,
                   capture_output=True)


# --- the cases ----------------------------------------------------------------------------------

def plausible(records: list[dict], before: list[dict]) -> list[dict]:
    """Orders at a price that is not finite and positive, or more than 50 % away from the
    symbol's last price booked before the corruption."""
    last: dict[str, float] = {}
    for r in before:
        last[r["symbol"]] = float(r["price"])
    bad = []
    for r in records:
        p = float(r["price"])
        ref = last.get(r["symbol"])
        if not (math.isfinite(p) and p > 0) or (ref and not 0.5 * ref <= p <= 1.5 * ref):
            bad.append(r)
    return bad


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_corrupted_live_segment(stack: Stack, kind: str) -> None:
    name = stack.cfg.market.shm_name
    base = len(stack.booked())
    wait_until(lambda: len(stack.booked()) >= base + 5, 20, what="orders to flow")
    logs_before = {p: stack.log(p) for p in ("orderbook", "strategy", "order_manager")}
    before = stack.booked()
    start_ns = time.monotonic_ns()
    if kind == "unlink":
        tracked_attach_and_exit(name)
    elif kind == "held_lock":
        assert stack.lock.acquire(timeout=5)
        try:
            time.sleep(1.0)   # the corruption itself: the lock held for 1 s
            held = len(stack.booked())
        finally:
            stack.lock.release()
    else:
        c = Corrupter(name)
        try:
            {"nan": lambda: c.slot_price(0, math.nan), "inf": lambda: c.slot_price(0, math.inf),
             "huge": lambda: c.slot_price(0, 1e300), "zero": lambda: c.slot_price(0, 0.0),
             "odd_seq": c.odd_seqs, "random_slots": c.random_slots, "magic": c.magic,
             "symbol_rename": c.rename, "reader_garbage": c.reader_garbage}[kind]()
        finally:
            c.close()
    end_ns = time.monotonic_ns()

    wait_until(lambda: any(r["received_ns"] > end_ns for r in stack.booked()), 10,
               interval=0.002, what="an order after the corruption")
    records = stack.booked()
    first = min(r["received_ns"] for r in records if r["received_ns"] > end_ns)
    recovery = (first - end_ns) / 1e9
    for child in stack.children:
        assert child.proc is not None and child.proc.is_alive(), f"{child.name} exited"
    new = records[len(before):]
    assert not plausible(new, before), "an order at an invalid price"
    if kind in EPISODE_LINES:
        process, text = EPISODE_LINES[kind]
        wait_until(lambda: stack.log(process).count(text) > logs_before[process].count(text),
                   5, what=f"the {kind} episode to be logged")
        time.sleep(0.6)   # one more heartbeat: a second line would show up by now
        assert stack.log(process).count(text) - logs_before[process].count(text) == 1
    details = {"orders_after": len(new), "corruption_s": (end_ns - start_ns) / 1e9}
    if kind == "held_lock":
        details["orders_while_held"] = held - len(before)
    record_fault(f"shm_{kind}", recovery,
                 what=f"{kind}: corruption end -> first order booked afterwards", **details)
    assert recovery < 1.0
