"""One order client flooding the OrderManager while the price book is watched: the rig of
tests/supervisor/test_flood.py (the structural check) and bench/bench_flood.py (the figures).

The watcher is a separate process at a SCHED_FIFO rank above every layout's, sleeping between
looks, so what it sees is the writer's pace, not its own starvation: it collects each slot's
write_ns (the OrderBook's clock at the write) whenever the book's publish_seq moved. A write it
missed (overwritten before it looked) can only make a gap look longer, never shorter.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import selectors
import socket
import subprocess
import sys
import time
from typing import Any

from ext import SharedPriceBook
from processes.shared.protocol import encode_hello
from processes.shared.runtime import die_with_parent

CTX = mp.get_context("spawn")
WATCH_PRIORITY = 90       # above every rt_priority of LAYOUTS
WATCH_PERIOD = 0.0005     # s between looks at the book
BATCH = 256               # orders per send() buffer of the flood client


def sched_fifo_problem() -> str | None:
    """Why SCHED_FIFO cannot be set here (tried in a child), or None."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    return (f"SCHED_FIFO cannot be set on this machine (no CAP_SYS_NICE, or no real-time "
            f"runtime for this cgroup): {done.stderr.strip().splitlines()[-1:]}")


def watch_book(shm: str, stop: Any, watching: Any, out: Any) -> None:
    """Until `stop`: every write_ns the book shows; puts (sorted list, longest time between two
    looks in ns) on `out`."""
    die_with_parent()
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(WATCH_PRIORITY))
    book = SharedPriceBook(name=shm, create=False)
    read, n = book.read_slot, book.nsymbols
    seen: set[int] = set()
    last = -1
    now = time.monotonic_ns
    looked = now()
    longest = 0
    watching.set()
    try:
        while not stop.is_set():
            t = now()
            longest = max(longest, t - looked)
            looked = t
            seq = book.publish_seq()
            if seq != last:
                last = seq
                for i in range(n):
                    seen.add(read(i)[3])
            time.sleep(WATCH_PERIOD)
    finally:
        book.close()
    seen.discard(0)
    out.put((sorted(seen), longest))


def flood_orders(port: int, symbols: list[str], seconds: float, out: Any) -> None:
    """One client sending valid orders (new ids, every symbol) as fast as the OrderManager takes
    them for `seconds`, reading its acks meanwhile; puts {start_ns, end_ns, sent, acks,
    rejects, closed} on `out`."""
    die_with_parent()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_hello("flood"))
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    syms = [s.encode() for s in symbols]
    made = sent = acks = rejects = 0
    pending = memoryview(b"")
    closed = ""
    start_ns = time.monotonic_ns()
    end_ns = start_ns + int(seconds * 1e9)
    while not closed and time.monotonic_ns() < end_ns:
        for _key, events in sel.select(0.05):
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    data = None
                except OSError as exc:
                    closed = str(exc)
                    break
                if data == b"":
                    closed = "closed by the OrderManager"
                    break
                if data:
                    acks += data.count(b'"ack"')
                    rejects += data.count(b'"reject"')
            if events & selectors.EVENT_WRITE:
                if not pending:
                    batch = []
                    for _ in range(BATCH):
                        made += 1
                        batch.append(b'{"id":"flood-%d","symbol":"%s","side":"%s","qty":1,'
                                     b'"price":100.25}*' % (made, syms[made % len(syms)],
                                                            b"BUY" if made & 1 else b"SELL"))
                    pending = memoryview(b"".join(batch))
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    closed = str(exc)
                    break
                pending = pending[n:]
                if not pending:
                    sent += BATCH
    stop_ns = time.monotonic_ns()
    sock.close()
    out.put({"start_ns": start_ns, "end_ns": stop_ns, "sent": sent, "acks": acks,
             "rejects": rejects, "closed": closed})


class BookWatch:
    """watch_book in its own process, for a with-block; .writes and .longest_look_ns (the
    longest time between two of its looks: a gap shorter than it is measured exactly) after
    the block."""

    def __init__(self, shm: str) -> None:
        self.stop, self.watching, self.out = CTX.Event(), CTX.Event(), CTX.Queue()
        self.proc = CTX.Process(target=watch_book,
                                args=(shm, self.stop, self.watching, self.out),
                                name="book-watch")
        self.writes: list[int] = []
        self.longest_look_ns = 0

    def __enter__(self) -> BookWatch:
        """Once the watcher looks at the book (a spawn takes a while on a loaded machine)."""
        self.proc.start()
        if not self.watching.wait(30):
            self.proc.kill()
            self.proc.join(5)
            raise RuntimeError(f"the book watcher did not start (exit {self.proc.exitcode})")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        try:
            self.writes, self.longest_look_ns = self.out.get(timeout=20)
        finally:
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)


def flood(port: int, symbols: list[str], seconds: float) -> dict[str, Any]:
    """Run flood_orders in its own process (normal scheduling, this process's CPUs) to the
    end; its result."""
    out = CTX.Queue()
    proc = CTX.Process(target=flood_orders, args=(port, symbols, seconds, out), name="flood")
    proc.start()
    try:
        return out.get(timeout=seconds + 30)
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def gaps_ns(writes: list[int], start_ns: int, end_ns: int) -> list[int]:
    """Time between consecutive writes within [start_ns, end_ns], the window's edges counted
    as writes (a book silent to the end has that silence as its last gap)."""
    inside = [start_ns, *(w for w in writes if start_ns < w < end_ns), end_ns]
    return [b - a for a, b in zip(inside, inside[1:])]


def silent_windows(writes: list[int], start_ns: int, end_ns: int, window_ns: int) -> list[int]:
    """Indices of the whole windows of `window_ns` from start_ns that hold no write."""
    count = (end_ns - start_ns) // window_ns
    hit = {(w - start_ns) // window_ns for w in writes if start_ns <= w < end_ns}
    return [k for k in range(count) if k not in hit]
